"""What the HTTP API's security keeps: users, API keys, refresh tokens and the audit log.

This module stores and queries; it never hashes or checks a secret. Callers pass password and key
hashes in and compare them on the way out, so no plain secret ever reaches the database.

Guarantees:
- usernames are unique within a tenant (another tenant may hold the same name, and creating
  it there neither fails nor reveals that); a name taken in the tenant is `Conflict` and
  changes nothing;
- an API key is reachable for change only within its own tenant: another tenant's key looks
  exactly like a key that does not exist;
- revoking (a key or a refresh token) is one-way, and the first `revoked_at` stands;
- purging deletes only refresh tokens that expired or were revoked before the time given;
- a refresh token rotates at most once: of any number of concurrent or replayed rotations of the
  same token, exactly one succeeds, and only while the token is neither revoked nor expired;
- every time comes back timezone-aware in UTC, and times given in must carry a timezone.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, insert, or_, select, update

from storage.database import EngineStore
from storage.errors import Conflict, InvalidRequest, NotFound
from storage.messages import as_utc, utcnow
from storage.models import (
    api_keys_table, audit_events_table, refresh_tokens_table, users_table,
)

ROLES = ("platform_admin", "admin", "operator", "submitter", "viewer")
MAX_PAGE = 1000
MAX_DETAILS_BYTES = 16 * 1024
_LENGTHS = {"tenant": 64, "username": 64, "password_hash": 255, "name": 100,
            "secret_hash": 128, "created_by": 32, "jti": 64, "user_id": 32, "actor": 128,
            "action": 32, "target": 200, "request_id": 64, "client": 64}


@dataclasses.dataclass(frozen=True)
class User:
    id: str
    tenant: str
    username: str
    role: str
    disabled: bool
    created_at: datetime
    updated_at: datetime
    password_hash: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class ApiKeyRecord:
    """An API key as kept. `id` is public (it names the key); only `secret_hash` proves it."""

    id: str
    tenant: str
    name: str
    role: str
    created_at: datetime
    secret_hash: str = dataclasses.field(repr=False)
    created_by: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def usable(self, now: datetime | None = None) -> bool:
        """Whether the key may authenticate at `now` (default: the present): not revoked, not
        expired."""
        now = now or utcnow()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclasses.dataclass(frozen=True)
class RefreshToken:
    jti: str
    user_id: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    replaced_by: str | None = None


@dataclasses.dataclass(frozen=True)
class AuditEvent:
    """One audited action. `id` grows with every event, so it orders the log."""

    id: int
    at: datetime
    tenant: str
    actor: str
    action: str
    target: str | None = None
    request_id: str | None = None
    client: str | None = None
    details: dict[str, Any] | None = None


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _aware(name: str, value: datetime) -> datetime:
    """An input time in UTC; `InvalidRequest` unless it says which timezone it is in."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidRequest(f"{name} must be a timezone-aware datetime", {"field": name})
    return value.astimezone(timezone.utc)


def _check_text(**fields: str | None) -> None:
    """Each field must be a non-empty string within its column's length; None means absent."""
    for name, value in fields.items():
        if value is None and name in ("created_by", "target", "request_id", "client"):
            continue
        if not isinstance(value, str) or not value:
            raise InvalidRequest(f"{name} must be a non-empty string", {"field": name})
        if len(value) > _LENGTHS[name]:
            raise InvalidRequest(f"{name} is {len(value)} characters; at most {_LENGTHS[name]}",
                                 {"field": name, "limit": _LENGTHS[name]})


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}, not {role!r}",
                             {"role": role})


def _check_details(details: dict[str, Any] | None) -> None:
    if details is None:
        return
    if not isinstance(details, dict):
        raise InvalidRequest("audit details must be a JSON object")
    try:
        size = len(json.dumps(details, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"audit details are not plain JSON: {exc}") from exc
    if size > MAX_DETAILS_BYTES:
        raise InvalidRequest(f"audit details are {size} bytes; at most {MAX_DETAILS_BYTES}",
                             {"size": size, "limit": MAX_DETAILS_BYTES})


def _user(row: Any) -> User:
    return User(row.id, row.tenant, row.username, row.role, bool(row.disabled),
                as_utc(row.created_at), as_utc(row.updated_at), row.password_hash)


def _api_key(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(row.id, row.tenant, row.name, row.role, as_utc(row.created_at),
                        row.secret_hash, row.created_by, _utc_or_none(row.expires_at),
                        _utc_or_none(row.revoked_at), _utc_or_none(row.last_used_at))


def _refresh_token(row: Any) -> RefreshToken:
    return RefreshToken(row.jti, row.user_id, as_utc(row.issued_at), as_utc(row.expires_at),
                        _utc_or_none(row.revoked_at), row.replaced_by)


def _audit_event(row: Any) -> AuditEvent:
    return AuditEvent(int(row.id), as_utc(row.at), row.tenant, row.actor, row.action, row.target,
                      row.request_id, row.client, row.details)


def _decode_cursor(cursor: str) -> int:
    if not isinstance(cursor, str) or not cursor.isdigit():
        raise InvalidRequest(f"cursor {cursor!r} is not one this audit log issued")
    return int(cursor)


class AuthStore(EngineStore):
    """Async access to users, API keys, refresh tokens and the audit log over one engine.
    Every write is committed when its method returns."""

    # Users

    async def create_user(self, tenant: str, username: str, password_hash: str,
                          role: str) -> User:
        """Store a new, enabled user. `Conflict` if `username` is taken in `tenant`."""
        _check_text(tenant=tenant, username=username, password_hash=password_hash)
        _check_role(role)
        now = utcnow()
        user = User(secrets.token_hex(16), tenant, username, role, False, now, now,
                    password_hash)
        taken = Conflict(f"username {username!r} is taken in this tenant",
                         {"field": "username", "username": username})
        async with self._transaction(f"creating user {username!r}", taken) as connection:
            await connection.execute(insert(users_table), dataclasses.asdict(user))
        return user

    async def user_by_name(self, tenant: str, username: str) -> User | None:
        """The user of `tenant` named `username`, or None."""
        table = users_table
        rows = await self._fetch(select(table).where(table.c.tenant == tenant,
                                                     table.c.username == username))
        return _user(rows[0]) if rows else None

    async def user(self, user_id: str) -> User:
        """The user with `user_id`; `NotFound` if there is none."""
        rows = await self._fetch(select(users_table).where(users_table.c.id == user_id))
        if not rows:
            raise NotFound(f"no user with id {user_id!r}", {"user_id": user_id})
        return _user(rows[0])

    async def set_role(self, user_id: str, role: str) -> User:
        _check_role(role)
        return await self._update_user(user_id, role=role)

    async def set_disabled(self, user_id: str, disabled: bool) -> User:
        """Disable or re-enable a user. Their refresh tokens are left as they are: revoke them
        with `revoke_refresh_tokens` to end their sessions."""
        return await self._update_user(user_id, disabled=bool(disabled))

    async def list_users(self, tenant: str) -> list[User]:
        """The users of `tenant`, by username."""
        table = users_table
        rows = await self._fetch(
            select(table).where(table.c.tenant == tenant).order_by(table.c.username))
        return [_user(row) for row in rows]

    async def _update_user(self, user_id: str, **values: Any) -> User:
        table = users_table
        async with self._transaction(f"updating user {user_id!r}") as connection:
            await connection.execute(update(table).where(table.c.id == user_id)
                                     .values(**values, updated_at=utcnow()))
            row = (await connection.execute(
                select(table).where(table.c.id == user_id))).first()
        if row is None:
            raise NotFound(f"no user with id {user_id!r}", {"user_id": user_id})
        return _user(row)

    # API keys

    async def create_api_key(self, tenant: str, name: str, role: str, secret_hash: str,
                             created_by: str | None = None,
                             expires_at: datetime | None = None) -> ApiKeyRecord:
        """Store a new API key under a freshly generated id (32 hex characters)."""
        _check_text(tenant=tenant, name=name, secret_hash=secret_hash, created_by=created_by)
        _check_role(role)
        expires = None if expires_at is None else _aware("expires_at", expires_at)
        key = ApiKeyRecord(secrets.token_hex(16), tenant, name, role, utcnow(), secret_hash,
                           created_by, expires)
        async with self._transaction(f"creating API key {name!r}") as connection:
            await connection.execute(insert(api_keys_table), dataclasses.asdict(key))
        return key

    async def api_key(self, key_id: str, tenant: str | None = None) -> ApiKeyRecord | None:
        """The key with `key_id`, revoked and expired ones included (check `usable`); None if
        there is none, or if `tenant` is given and the key belongs to another."""
        table = api_keys_table
        query = select(table).where(table.c.id == key_id)
        if tenant is not None:
            query = query.where(table.c.tenant == tenant)
        rows = await self._fetch(query)
        return _api_key(rows[0]) if rows else None

    async def revoke_api_key(self, key_id: str, tenant: str) -> ApiKeyRecord:
        """Revoke a key of `tenant` and return it. `NotFound` if `tenant` has no such key.
        Revoking again changes nothing: the first `revoked_at` stands."""
        table = api_keys_table
        async with self._transaction(f"revoking API key {key_id!r}") as connection:
            await connection.execute(
                update(table)
                .where(table.c.id == key_id, table.c.tenant == tenant,
                       table.c.revoked_at.is_(None))
                .values(revoked_at=utcnow()))
            row = (await connection.execute(select(table).where(
                table.c.id == key_id, table.c.tenant == tenant))).first()
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}", {"key_id": key_id})
        return _api_key(row)

    async def list_api_keys(self, tenant: str) -> list[ApiKeyRecord]:
        """The keys of `tenant`, oldest first, revoked and expired ones included."""
        table = api_keys_table
        rows = await self._fetch(select(table).where(table.c.tenant == tenant)
                                 .order_by(table.c.created_at, table.c.id))
        return [_api_key(row) for row in rows]

    async def touch_api_key(self, key_id: str) -> None:
        """Record that the key was just used: one indexed update, no read."""
        table = api_keys_table
        async with self._transaction(f"recording use of API key {key_id!r}") as connection:
            await connection.execute(
                update(table).where(table.c.id == key_id).values(last_used_at=utcnow()))

    # Refresh tokens

    async def add_refresh_token(self, jti: str, user_id: str,
                                expires_at: datetime) -> RefreshToken:
        """Store a newly issued refresh token. `Conflict` if `jti` is already stored."""
        _check_text(jti=jti, user_id=user_id)
        token = RefreshToken(jti, user_id, utcnow(), _aware("expires_at", expires_at))
        stored = Conflict(f"refresh token {jti!r} is already stored", {"jti": jti})
        async with self._transaction("storing a refresh token", stored) as connection:
            await connection.execute(insert(refresh_tokens_table), dataclasses.asdict(token))
        return token

    async def refresh_token(self, jti: str) -> RefreshToken | None:
        rows = await self._fetch(
            select(refresh_tokens_table).where(refresh_tokens_table.c.jti == jti))
        return _refresh_token(rows[0]) if rows else None

    async def rotate_refresh_token(self, old_jti: str, new_jti: str,
                                   new_expires_at: datetime) -> bool:
        """Replace an active token by a new one of the same user, in one transaction: the old
        is revoked with `replaced_by=new_jti` and the new is stored. False, with nothing
        changed, when the old token is unknown, revoked (already rotated: a replay) or expired.
        Of concurrent rotations of one token exactly one returns True."""
        _check_text(jti=new_jti)
        expires = _aware("new_expires_at", new_expires_at)
        table = refresh_tokens_table
        now = utcnow()
        stored = Conflict(f"refresh token {new_jti!r} is already stored", {"jti": new_jti})
        async with self._transaction("rotating a refresh token", stored) as connection:
            # The guarded update is the lock: a concurrent rotation waits for it, then
            # finds the token revoked and updates nothing.
            revoked = (await connection.execute(
                update(table)
                .where(table.c.jti == old_jti, table.c.revoked_at.is_(None),
                       table.c.expires_at > now)
                .values(revoked_at=now, replaced_by=new_jti)
                .returning(table.c.user_id))).first()
            if revoked is None:
                return False
            await connection.execute(insert(table), {
                "jti": new_jti, "user_id": revoked.user_id, "issued_at": now,
                "expires_at": expires, "revoked_at": None, "replaced_by": None})
        return True

    async def revoke_refresh_tokens(self, user_id: str) -> int:
        """Revoke every token of `user_id` not revoked yet; returns how many that was."""
        table = refresh_tokens_table
        async with self._transaction(f"revoking refresh tokens of {user_id!r}") as connection:
            result = await connection.execute(
                update(table)
                .where(table.c.user_id == user_id, table.c.revoked_at.is_(None))
                .values(revoked_at=utcnow()))
        return int(result.rowcount or 0)

    async def revoke_refresh_token(self, jti: str) -> RefreshToken | None:
        """Revoke one token and return it as now kept; None if there is no such token.
        Revoking again changes nothing: the first `revoked_at` stands."""
        table = refresh_tokens_table
        async with self._transaction("revoking a refresh token") as connection:
            await connection.execute(
                update(table).where(table.c.jti == jti, table.c.revoked_at.is_(None))
                .values(revoked_at=utcnow()))
            row = (await connection.execute(select(table).where(table.c.jti == jti))).first()
        return None if row is None else _refresh_token(row)

    async def purge_refresh_tokens(self, older_than: datetime) -> int:
        """Delete every token that expired or was revoked before `older_than` (a usable
        token, or one revoked or expired since, is kept); returns how many were deleted."""
        before = _aware("older_than", older_than)
        table = refresh_tokens_table
        async with self._transaction("purging old refresh tokens") as connection:
            result = await connection.execute(
                delete(table).where(or_(table.c.expires_at < before,
                                        table.c.revoked_at < before)))
        return int(result.rowcount or 0)

    # Audit log

    async def audit(self, tenant: str, actor: str, action: str, target: str | None = None,
                    request_id: str | None = None, client: str | None = None,
                    details: dict[str, Any] | None = None) -> AuditEvent:
        """Append an event to `tenant`'s audit log and return it with its id. `actor` names
        who acted: `user:<id>`, `key:<id>` or `system`."""
        _check_text(tenant=tenant, actor=actor, action=action, target=target,
                    request_id=request_id, client=client)
        _check_details(details)
        values: dict[str, Any] = {
            "at": utcnow(), "tenant": tenant, "actor": actor, "action": action, "target": target,
            "request_id": request_id, "client": client, "details": details}
        table = audit_events_table
        async with self._transaction("writing an audit event") as connection:
            result = await connection.execute(
                insert(table).values(**values).returning(table.c.id))
            event_id = int(result.scalar_one())
        return AuditEvent(id=event_id, **values)

    async def list_audit(self, tenant: str, limit: int = 100,
                         cursor: str | None = None) -> tuple[list[AuditEvent], str | None]:
        """`tenant`'s audit events, newest first, `limit` at a time, and the cursor of the next
        (older) page, or None on the last."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
        table = audit_events_table
        query = select(table).where(table.c.tenant == tenant)
        if cursor is not None:
            query = query.where(table.c.id < _decode_cursor(cursor))
        rows = await self._fetch(query.order_by(table.c.id.desc()).limit(limit + 1))
        events = [_audit_event(row) for row in rows[:limit]]
        next_cursor = str(events[-1].id) if len(rows) > limit else None
        return events, next_cursor
