"""`ymera admin`: bootstrap the HTTP API's first operators, straight on storage (no cluster).

`create-user` stores a user with an argon2id password hash; `create-key` stores an API key
and prints its plaintext once (only its hash is kept). Both are written to the audit log with
the actor `system:cli`. These are the only ways to grant `platform_admin` (the HTTP API
refuses to). The platform audit log's name (`_platform`) is no tenant: no user or key can be
made in it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from storage.database import migrate
from storage.errors import InvalidRequest

CLI_ACTOR = "system:cli"


def _check_tenant(tenant: str) -> None:
    from serve_apps.routes.access import PLATFORM_AUDIT_TENANT

    if tenant == PLATFORM_AUDIT_TENANT:
        raise InvalidRequest(f"tenant {tenant!r} is reserved for the platform's audit log; "
                             "choose another tenant", {"field": "tenant"})


def create_user(database_url: str, tenant: str, username: str, role: str,
                password: str) -> dict[str, Any]:
    """Store a new user; `InvalidRequest` for a weak password (zxcvbn score below 3, the
    username and tenant counting as guessable) or bad field, `Conflict` when the username is
    taken in `tenant` (other tenants may hold the same name)."""
    from serve_apps.passwords import hash_password

    _check_tenant(tenant)

    password_hash = hash_password(password, (username, tenant))  # the policy first

    async def run() -> dict[str, Any]:
        from storage.auth_store import AuthStore

        async with await AuthStore.open(database_url) as store:
            user = await store.create_user(tenant, username, password_hash, role)
            await store.audit(tenant, CLI_ACTOR, "user_created", target=user.id,
                              details={"username": username, "role": role})
        return {"id": user.id, "tenant": user.tenant, "username": user.username,
                "role": user.role}

    migrate(database_url)
    return asyncio.run(run())


def create_key(database_url: str, tenant: str, name: str, role: str,
               expires_in_days: float | None = None) -> dict[str, Any]:
    """Store a new API key; the returned `key` is its only plaintext copy."""
    from serve_apps.api_keys import key_text, new_key_secret
    from storage.messages import utcnow

    _check_tenant(tenant)
    secret, hashed = new_key_secret()
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None

    async def run() -> dict[str, Any]:
        from storage.auth_store import AuthStore

        async with await AuthStore.open(database_url) as store:
            record = await store.create_api_key(tenant, name, role, hashed, expires_at=expires)
            await store.audit(tenant, CLI_ACTOR, "key_created", target=record.id,
                              details={"name": name, "role": role})
        return {"id": record.id, "tenant": record.tenant, "name": record.name,
                "role": record.role, "expires_at": expires.isoformat() if expires else None,
                "key": key_text(record.id, secret)}

    migrate(database_url)
    return asyncio.run(run())
