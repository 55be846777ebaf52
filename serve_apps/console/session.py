"""Console sessions: a cookie that names a revocable, expiring row the auth store keeps.

    secret = await start_session(svc, refresh_token, ttl_s)   # after the API's own login
    principal, session = await session_principal(request)     # every console request
    await end_session(svc, session)                           # sign-out
    await purge_if_due(request)                               # at a sign-in

A session is a refresh-token row of `storage.auth_store` whose `jti` is the SHA-256 of the
cookie's random secret: the sign-in reuses the API's login (`routes.auth.login`: its rate
limits, per-account throttle, password check and audit), then rotates the refresh token it
issued into the session row, so that token is spent and the row carries the console's
expiry. Every API replica reads the same rows, so a sign-out or an expiry holds on all of them.

Guarantees:
- the cookie is `HttpOnly`, `SameSite=Strict`, `Path=/console`, and `Secure` when the request
  came over https; it holds only a random secret, and the database only its hash, so a read
  of the database yields no usable cookie (nor a refresh token: that needs the signing key);
- a session is valid while its row is neither revoked nor expired and its user is enabled and
  in the tenant it signed in to; the caller is then exactly the API's: the stored user's
  tenant and role (`Principal`, `user:<id>`), so a demotion applies at once (within
  `auth_cache_s`, like the API);
- a sign-out revokes the row: the same cookie presented again is refused on every replica;
- rows that ended (expired or revoked) more than `keep_ended_s` ago are deleted by a purge a
  sign-in runs at most once per `purge_every_s` per replica, so they do not pile up;
- a missing, unknown, revoked or expired session is `Unauthenticated`, never another error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import secrets
import time
from datetime import timedelta
from typing import Final

from fastapi import Request
from starlette.responses import Response

from serve_apps.errors import Unauthenticated
from serve_apps.permissions import Principal
from serve_apps.routes.access import Services, services
from storage.auth_store import User
from storage.errors import NotFound, StorageError
from storage.messages import utcnow

COOKIE: Final = "ymera_console"
LOGIN_COOKIE: Final = "ymera_console_login"
COOKIE_PATH: Final = "/console"
DEFAULT_SESSION_TTL_S: Final = 8 * 3600
PURGE_EVERY_S: Final = 3600.0
KEEP_ENDED_S: Final = 24 * 3600

log = logging.getLogger("ymera.console")


@dataclasses.dataclass
class ConsoleSettings:
    """How long a console session lasts (capped by the API's `refresh_ttl_s`), and how often
    and after how long ended sessions and refresh tokens are purged (`purge_if_due`)."""

    session_ttl_s: int = DEFAULT_SESSION_TTL_S
    purge_every_s: float = PURGE_EVERY_S
    keep_ended_s: int = KEEP_ENDED_S


@dataclasses.dataclass(frozen=True)
class Session:
    """A signed-in console session: its row's id (the hash of the cookie) and its user."""

    jti: str
    user_id: str


def session_id(secret: str) -> str:
    """The stored id of the session whose cookie holds `secret`."""
    return hashlib.sha256(secret.encode()).hexdigest()


def settings(request: Request) -> ConsoleSettings:
    return request.app.state.console_settings


async def start_session(svc: Services, refresh_token: str, ttl_s: int) -> str:
    """Turn the refresh token the API's login just issued into a console session; the cookie's
    secret."""
    claims = svc.tokens.verify_refresh(refresh_token)
    secret = secrets.token_urlsafe(32)
    ttl = min(ttl_s, svc.tokens.refresh_ttl_s)
    if not await svc.auth_store.rotate_refresh_token(
            claims.token_id, session_id(secret), utcnow() + timedelta(seconds=ttl)):
        raise Unauthenticated("the sign-in could not be completed; try again")
    return secret


async def session_principal(request: Request) -> tuple[Principal, Session]:
    """The caller this request's session cookie names (see the module's guarantees)."""
    secret = request.cookies.get(COOKIE)
    if not secret or len(secret) > 128:
        raise Unauthenticated("sign in to use the console")
    svc = services(request)
    row = await svc.auth_store.refresh_token(session_id(secret))
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        raise Unauthenticated("your session has ended; sign in again")
    user = await svc.credentials.get("user", row.user_id, lambda: _user_or_none(svc, row.user_id))
    if user is None or user.disabled:
        raise Unauthenticated("this account is disabled or no longer exists")
    principal = Principal(tenant=user.tenant, role=user.role, subject=f"user:{user.id}")
    return principal, Session(jti=row.jti, user_id=user.id)


async def _user_or_none(svc: Services, user_id: str) -> User | None:
    try:
        return await svc.auth_store.user(user_id)
    except NotFound:
        return None


async def end_session(svc: Services, session: Session) -> None:
    """Revoke the session's row (the first revocation time stands)."""
    await svc.auth_store.revoke_refresh_token(session.jti)


async def purge_if_due(request: Request) -> int:
    """Delete refresh-token rows (sessions and API refresh tokens) that expired or were
    revoked more than `keep_ended_s` ago, at most once per `purge_every_s` on this replica
    (the API runs no periodic work; sign-ins are frequent enough to keep the table small).
    Returns how many rows went; a failed purge is logged and never fails the sign-in."""
    config = settings(request)
    state = request.app.state
    now = time.monotonic()
    last = getattr(state, "console_purged_at", None)
    if last is not None and now - last < config.purge_every_s:
        return 0
    state.console_purged_at = now
    try:
        return await services(request).auth_store.purge_refresh_tokens(
            utcnow() - timedelta(seconds=config.keep_ended_s))
    except StorageError as exc:
        log.warning("purging ended console sessions failed: %s", exc)
        return 0


def csrf_token(svc: Services, session_jti: str) -> str:
    """The CSRF token of a session: bound to it, unguessable without the signing key."""
    key = svc.config.jwt_secret.encode()
    return hmac.new(key, f"console-csrf:{session_jti}".encode(), hashlib.sha256).hexdigest()


def login_csrf_token(svc: Services, login_nonce: str) -> str:
    """The CSRF token of the sign-in form, bound to the pre-session nonce cookie."""
    key = svc.config.jwt_secret.encode()
    return hmac.new(key, f"console-login:{login_nonce}".encode(), hashlib.sha256).hexdigest()


def tokens_match(expected: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(expected, presented or "")


def set_cookie(request: Request, response: Response, name: str, value: str,
               max_age: int) -> None:
    """Set a console cookie with the attributes the module promises."""
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
