"""Logging in, refreshing tokens, and managing API keys.

Guarantees:
- a login names its tenant (`tenant`, "default" when left out) and a username in it;
- logins are rate-limited per client address (the per-caller budget), and so are failed
  logins and refreshes (`failed_auth_rate_limit`, shared with every other 401): once an
  address has none left, its logins answer 429 before any password is checked;
- each account (tenant, username as typed, whether or not it exists) is throttled by
  `serve_apps.login_throttle`: after `login_free_failures` failures in a row each attempt must
  wait, doubling up to `login_max_delay_s`; an attempt during the wait answers 429 with
  `Retry-After`, even with the right password, and is never checked; the failure that starts
  or lengthens a wait is audited as `login_throttled`; a successful login clears it;
- a failed login answers 401 with one message whether the user exists, is disabled, or the
  password is wrong (and costs the same argon2 work), and is audited as `login_failed`;
- a refresh token works once: using it rotates it; presenting it again (a replay, so possibly
  a stolen token) is refused with 401 and revokes every refresh token of its user;
- an API key's plaintext is in the creation response only; listing shows ids and metadata;
- a caller cannot mint a key with a role above its own, nor one with `platform_admin`
  (only `ymera admin create-key` can), and keys belong to the caller's
  tenant; another tenant's key is a 404;
- logins, failed logins, key creation and revocation are written to the audit log.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request

from serve_apps.api_keys import key_text, new_key_secret
from serve_apps.errors import Forbidden, RateLimited, Unauthenticated
from serve_apps.passwords import verify_password
from serve_apps.permissions import CLI_ONLY_ROLES
from serve_apps.routes.access import (
    ROLE_RANK, Caller, Services, audit, authorize, client_address, failed_auth_allowed,
    services, spend,
)
from serve_apps.schemas import ApiKeyBody, LoginBody, RefreshBody, TokenPair
from storage.auth_store import ApiKeyRecord, User
from storage.errors import NotFound
from storage.messages import utcnow

LOGIN_FAILED = "invalid username or password"
UNKNOWN_TENANT = "-"  # failed logins of usernames that exist nowhere are audited here

public = APIRouter(tags=["auth"])
keys = APIRouter(tags=["keys"], dependencies=[Depends(authorize)])


async def _token_pair(svc: Services, user: User) -> TokenPair:
    access = svc.tokens.issue_access(user.id, user.tenant, user.role)
    refresh = svc.tokens.issue_refresh(user.id, user.tenant, user.role)
    await svc.auth_store.add_refresh_token(refresh.claims.token_id, user.id,
                                           refresh.claims.expires_at)
    return TokenPair(access_token=access.token, refresh_token=refresh.token,
                     expires_in=svc.tokens.access_ttl_s)


@public.post("/auth/token", response_model=TokenPair, summary="Log in with a password")
async def login(body: LoginBody, request: Request) -> TokenPair:
    svc = services(request)
    await spend(request, svc.limiter, "login", client_address(request) or "unknown",
                svc.config.key_rate_limit)
    await failed_auth_allowed(request, spend_one=False)
    attempt = await svc.login_throttle.attempt(body.tenant, body.username)
    if not attempt.allowed:
        raise RateLimited("too many failed logins for this account; try again later",
                          {"scope": "login_account"}, retry_after_s=attempt.wait_s)
    user = await svc.auth_store.user_by_name(body.tenant, body.username)
    valid = await asyncio.to_thread(verify_password, user.password_hash if user else None,
                                    body.password)
    if user is None or not valid or user.disabled:
        if user is not None:
            tenant, actor, target = user.tenant, f"user:{user.id}", None
            reason = "disabled" if valid else "password"
        else:
            tenant, actor, target = UNKNOWN_TENANT, "anonymous", _account(body)
            reason = "unknown_user"
        await audit(request, tenant, actor, "login_failed", target=target,
                     details={"reason": reason, "failures": attempt.failures})
        if attempt.delay_s > 0:
            await audit(request, tenant, actor, "login_throttled", target=target,
                         details={"failures": attempt.failures,
                                  "retry_after_s": attempt.delay_s})
        await failed_auth_allowed(request, spend_one=True)
        raise Unauthenticated(LOGIN_FAILED)
    await svc.login_throttle.succeeded(body.tenant, body.username)
    await audit(request, user.tenant, f"user:{user.id}", "login")
    return await _token_pair(svc, user)


def _account(body: LoginBody) -> str:
    """How the audit names an account that exists nowhere: `tenant/username`."""
    return f"{body.tenant}/{body.username}"[:200]


@public.post("/auth/refresh", response_model=TokenPair, summary="Rotate a refresh token")
async def refresh(body: RefreshBody, request: Request) -> TokenPair:
    try:
        return await _refresh(body, request)
    except Unauthenticated:
        await failed_auth_allowed(request, spend_one=True)
        raise


async def _refresh(body: RefreshBody, request: Request) -> TokenPair:
    svc = services(request)
    claims = svc.tokens.verify_refresh(body.refresh_token)
    try:
        user = await svc.auth_store.user(claims.subject)
    except NotFound:
        user = None
    if user is None or user.disabled:
        raise Unauthenticated("refresh token is no longer valid")
    fresh = svc.tokens.issue_refresh(user.id, user.tenant, user.role)
    if not await svc.auth_store.rotate_refresh_token(
            claims.token_id, fresh.claims.token_id, fresh.claims.expires_at):
        revoked = await svc.auth_store.revoke_refresh_tokens(user.id)
        await audit(request, user.tenant, f"user:{user.id}", "refresh_replayed",
                     details={"revoked": revoked})
        raise Unauthenticated("refresh token is no longer valid")
    access = svc.tokens.issue_access(user.id, user.tenant, user.role)
    return TokenPair(access_token=access.token, refresh_token=fresh.token,
                     expires_in=svc.tokens.access_ttl_s)


def _key_json(record: ApiKeyRecord) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "role": record.role,
            "created_at": record.created_at.isoformat(), "created_by": record.created_by,
            "expires_at": record.expires_at.isoformat() if record.expires_at else None,
            "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
            "last_used_at": record.last_used_at.isoformat() if record.last_used_at else None}


@keys.post("/keys", status_code=201, summary="Create an API key (its secret is shown once)")
async def create_key(body: ApiKeyBody, request: Request, caller: Caller) -> dict[str, Any]:
    svc = services(request)
    if body.role in CLI_ONLY_ROLES:
        raise Forbidden(f"a key with the role {body.role!r} is created only with `ymera admin "
                        "create-key` on storage, never over HTTP", {"role": body.role})
    if ROLE_RANK[body.role] > ROLE_RANK.get(caller.role, -1):
        raise Forbidden(f"a {caller.role} cannot create a key with role {body.role!r}",
                        {"role": body.role})
    expires = utcnow() + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    secret, hashed = new_key_secret()
    record = await svc.auth_store.create_api_key(
        caller.tenant, body.name, body.role, hashed,
        created_by=caller.subject.partition(":")[2], expires_at=expires)
    await audit(request, caller.tenant, caller.subject, "key_created", target=record.id,
                 details={"role": record.role, "name": record.name})
    return {**_key_json(record), "key": key_text(record.id, secret)}


@keys.get("/keys", summary="List the tenant's API keys (never their secrets)")
async def list_keys(request: Request, caller: Caller) -> dict[str, Any]:
    records = await services(request).auth_store.list_api_keys(caller.tenant)
    return {"keys": [_key_json(r) for r in records]}


@keys.delete("/keys/{key_id}", summary="Revoke an API key")
async def revoke_key(key_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    svc = services(request)
    record = await svc.auth_store.revoke_api_key(key_id, caller.tenant)
    svc.credentials.forget("key", record.id)
    await audit(request, caller.tenant, caller.subject, "key_revoked", target=record.id)
    return _key_json(record)
