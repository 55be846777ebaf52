"""Who is calling, may they call this route, and may they call it now.

`ROUTE_PERMISSIONS` is the whole route → permission table, in one place. Routers that need a
caller depend on `authorize` at router level, so a route cannot forget to check: a route that
is missing from the table is refused with `Forbidden` (deny by default), and a test checks that
every mounted route is in the table or in `PUBLIC_ROUTES`.

Guarantees of `authorize`, in this order, before the route's own work:
1. the caller presents exactly one credential: `Authorization: Bearer <access JWT>`,
   `Authorization: ApiKey <ymk_…>` or `X-API-Key: <ymk_…>`; none, a malformed one, a token that
   does not verify, a disabled or deleted user, an unknown, wrong, revoked or expired key → 401
   (users and keys as this replica read them at most `auth_cache_s` ago, see
   `serve_apps.credential_cache`); each 401 spends one of the client address's
   `failed_auth_rate_limit` budget, and once that is empty the answer is 429 instead, before
   any storage read for a key this replica does not know;
2. the caller's role grants the route's permission → else 403;
3. one request is spent from the caller's budget and then from its tenant's → else 429 with
   `Retry-After` and the `RateLimit-*` headers of the budget that refused; on success the
   `RateLimit-*` headers of the caller's budget are set on the response.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Annotated, Any, Final

from fastapi import Depends, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from actors.logs import bind_log_context
from serve_apps.api_config import ApiConfig
from serve_apps.api_keys import check_key_usable, parse_api_key, secret_matches
from serve_apps.client_address import ClientAddresses
from serve_apps.credential_cache import CredentialCache
from serve_apps.errors import Forbidden, RateLimited, Unauthenticated
from serve_apps.login_throttle import LoginThrottle
from serve_apps.metrics import api_metrics
from serve_apps.permissions import Principal
from serve_apps.platform_port import PlatformPort
from serve_apps.rate_limit import RateLimit, RateLimiter
from serve_apps.tokens import TokenIssuer
from storage.auth_store import AuthStore, User
from storage.errors import NotFound
from storage.messages import utcnow

API_PREFIX: Final = "/api/v1"
TOUCH_INTERVAL = timedelta(minutes=1)

ROUTE_PERMISSIONS: Final[dict[tuple[str, str], str]] = {
    ("POST", "/keys"): "keys:manage",
    ("GET", "/keys"): "keys:manage",
    ("DELETE", "/keys/{key_id}"): "keys:manage",
    ("POST", "/tasks"): "tasks:submit",
    ("GET", "/tasks"): "tasks:read",
    ("GET", "/tasks/{task_id}"): "tasks:read",
    ("POST", "/tasks/{task_id}/cancel"): "tasks:cancel",
    ("POST", "/tasks/{task_id}/feedback"): "tasks:feedback",
    ("GET", "/tasks/{task_id}/attempts"): "tasks:read",
    ("GET", "/tasks/{task_id}/events"): "tasks:read",
    ("GET", "/batches/{batch_id}"): "tasks:read",
    ("GET", "/tasks/{task_id}/stream"): "tasks:read",
    ("GET", "/stream"): "tasks:read",
    ("POST", "/tasks/{task_id}/requeue"): "tasks:requeue",
    ("GET", "/dead"): "dead:read",
    ("POST", "/route"): "route:query",
    ("GET", "/agents"): "agents:read",
    ("GET", "/agents/stats"): "agents:read",
    ("POST", "/agents/{agent_type}/scale"): "platform:scale",
    ("POST", "/users"): "users:manage",
    ("GET", "/users"): "users:manage",
    ("POST", "/users/{user_id}/role"): "users:manage",
    ("POST", "/users/{user_id}/disable"): "users:manage",
    ("POST", "/users/{user_id}/enable"): "users:manage",
    ("GET", "/audit"): "audit:read",
    ("POST", "/workflows"): "workflows:submit",
    ("GET", "/runs"): "workflows:read",
    ("GET", "/runs/{run_id}"): "workflows:read",
    ("GET", "/runs/{run_id}/events"): "workflows:read",
    ("GET", "/runs/{run_id}/stream"): "workflows:read",
    ("POST", "/runs/{run_id}/steps/{step_id}/approve"): "workflows:approve",
    ("POST", "/runs/{run_id}/steps/{step_id}/reject"): "workflows:approve",
    ("POST", "/runs/{run_id}/cancel"): "workflows:cancel",
    ("POST", "/runs/{run_id}/retry"): "workflows:cancel",
    ("POST", "/plan"): "workflows:plan",
    ("GET", "/llm"): "llm:read",
    ("GET", "/llm/usage"): "llm:read",
    ("PUT", "/llm/budgets/{tenant}"): "llm:budget",
    ("GET", "/knowledge/collections"): "knowledge:read",
    ("GET", "/knowledge/collections/{collection}/documents"): "knowledge:read",
    ("DELETE", "/knowledge/collections/{collection}/documents/{document_id}"): "knowledge:write",
    ("POST", "/knowledge/documents"): "knowledge:write",
    ("POST", "/knowledge/search"): "knowledge:read",
    ("POST", "/knowledge/answer"): "knowledge:read",
    ("GET", "/webhooks"): "webhooks:read",
    ("POST", "/webhooks"): "webhooks:manage",
    ("GET", "/webhooks/deliveries"): "webhooks:read",
    ("GET", "/webhooks/deliveries/{delivery_id}"): "webhooks:read",
    ("POST", "/webhooks/deliveries/{delivery_id}/redeliver"): "webhooks:manage",
    ("GET", "/webhooks/callback-secret"): "webhooks:manage",
    ("POST", "/webhooks/callback-secret"): "webhooks:manage",
    ("GET", "/webhooks/{subscription_id}"): "webhooks:read",
    ("PATCH", "/webhooks/{subscription_id}"): "webhooks:manage",
    ("DELETE", "/webhooks/{subscription_id}"): "webhooks:manage",
    ("POST", "/webhooks/{subscription_id}/rotate-secret"): "webhooks:manage",
    ("GET", "/inbox/{agent_type}"): "inbox:read",
    ("POST", "/inbox/{agent_type}"): "inbox:write",
    ("POST", "/inbox/{agent_type}/{message_id}/ack"): "inbox:write",
}
"""(method, path under `API_PREFIX`) → the permission a caller's role must grant."""

PUBLIC_ROUTES: Final = frozenset({
    ("POST", "/auth/token"), ("POST", "/auth/refresh"), ("GET", "/health"), ("GET", "/ready"),
})
"""Routes that take no credential: logging in, refreshing, and the probes."""

ROLE_RANK: Final = {"viewer": 0, "submitter": 1, "operator": 2, "admin": 3,
                    "platform_admin": 4}
"""Roles in order of power: a caller grants, and manages users of, roles up to its own rank
(and never one of `permissions.CLI_ONLY_ROLES`)."""

PLATFORM_AUDIT_TENANT: Final = "_platform"
"""The audit log of platform-wide actions (scaling the shared pools): no tenant's, so its
entries never name the tenant that acted; `GET /audit?scope=platform` reads it."""


@dataclasses.dataclass(frozen=True)
class Services:
    """What the routes share, built once by `create_app` and kept on `app.state.services`."""

    config: ApiConfig
    port: PlatformPort
    auth_store: AuthStore
    limiter: RateLimiter
    tokens: TokenIssuer
    credentials: CredentialCache
    addresses: ClientAddresses
    login_throttle: LoginThrottle


def services(request: Request) -> Services:
    return request.app.state.services


def client_address(request: Request) -> str | None:
    """The caller's address as the audit log and the login and failed-authentication limits
    record it: the socket peer, or what trusted proxies say (`serve_apps.client_address`)."""
    return services(request).addresses.of(request)


FAILED_AUTH_SCOPE: Final = "auth_failure"

# Declared for the OpenAPI document (`securitySchemes` and each operation's `security`);
# `authenticate` reads the headers itself, so these never refuse anything on their own.
BEARER_SCHEME: Final = HTTPBearer(
    auto_error=False, scheme_name="bearer", bearerFormat="JWT",
    description="An access token from `POST /auth/token`: `Authorization: Bearer <token>`.")
API_KEY_SCHEME: Final = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="apiKey",
    description="An API key `ymk_…` in `X-API-Key` (or as `Authorization: ApiKey <key>`).")
API_KEY_AUTHORIZATION_SCHEME: Final = APIKeyHeader(
    name="Authorization", auto_error=False, scheme_name="apiKeyAuthorization",
    description="An API key as `Authorization: ApiKey ymk_…`.")


async def failed_auth_allowed(request: Request, spend_one: bool) -> None:
    """`RateLimited` when the client address has no failed-authentication budget left;
    `spend_one` spends one of it (a failure), else this only asks."""
    svc = services(request)
    address = client_address(request) or "unknown"
    decision = await svc.limiter.check(FAILED_AUTH_SCOPE, address,
                                       svc.config.failed_auth_rate_limit, spend=spend_one)
    if not decision.allowed:
        api_metrics().record_rate_limited(None)
        limit = svc.config.failed_auth_rate_limit
        request.state.rate_limit_headers = decision.headers()
        raise RateLimited(f"too many failed authentications from this address (at most "
                          f"{limit.requests} per {limit.per_s:g}s); try again later",
                          {"scope": FAILED_AUTH_SCOPE},
                          retry_after_s=decision.retry_after_s or 1.0)


async def audit(request: Request, tenant: str, actor: str, action: str,
                target: str | None = None, details: dict[str, Any] | None = None) -> None:
    """Write an audit event with this request's id and the caller's address."""
    await services(request).auth_store.audit(
        tenant, actor, action, target=target, request_id=request.state.request_id,
        client=client_address(request), details=details)


async def authenticate(
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_SCHEME)] = None,
        _key: Annotated[str | None, Security(API_KEY_SCHEME)] = None,
        _key_authorization: Annotated[str | None,
                                      Security(API_KEY_AUTHORIZATION_SCHEME)] = None,
) -> Principal:
    """The verified caller of this request (see the module's guarantee 1)."""
    try:
        return await _authenticate(request)
    except Unauthenticated:
        await failed_auth_allowed(request, spend_one=True)
        raise


async def _authenticate(request: Request) -> Principal:
    svc = services(request)
    authorization = request.headers.get("authorization")
    header_key = request.headers.get("x-api-key")
    if authorization and header_key:
        raise Unauthenticated("send one credential: Authorization or X-API-Key, not both")
    if header_key:
        return await _key_principal(request, svc, header_key)
    if not authorization:
        raise Unauthenticated("credentials required: Authorization: Bearer <token> or "
                              "ApiKey <key>")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() == "apikey":
        return await _key_principal(request, svc, credential.strip())
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthenticated("unsupported Authorization scheme; use Bearer or ApiKey")
    claims = svc.tokens.verify_access(credential.strip())
    user = await _user_or_none(svc, claims.subject)
    if user is None or user.disabled or user.tenant != claims.tenant:
        raise Unauthenticated("user is disabled or no longer exists")
    # the stored role wins: a demotion applies within auth_cache_s, not at token expiry
    return Principal(tenant=user.tenant, role=user.role, subject=f"user:{user.id}")


async def _user_or_none(svc: Services, user_id: str) -> User | None:
    async def load() -> User | None:
        try:
            return await svc.auth_store.user(user_id)
        except NotFound:
            return None

    return await svc.credentials.get("user", user_id, load)


async def _key_principal(request: Request, svc: Services, presented: str) -> Principal:
    key_id, secret = parse_api_key(presented)
    if not svc.credentials.holds("key", key_id):
        await failed_auth_allowed(request, spend_one=False)  # no storage read once refused
    record = await svc.credentials.get("key", key_id, lambda: svc.auth_store.api_key(key_id),
                                       remember_missing=True)
    if record is None or not secret_matches(record.secret_hash, secret):
        raise Unauthenticated("invalid API key")
    now = utcnow()
    check_key_usable(record.expires_at, record.revoked_at, now)
    if record.last_used_at is None or now - record.last_used_at > TOUCH_INTERVAL:
        await svc.auth_store.touch_api_key(record.id)
        svc.credentials.forget("key", record.id)  # read again with its new last use
    return Principal(tenant=record.tenant, role=record.role, subject=f"key:{record.id}")


def required_permission(request: Request) -> str:
    """The permission of the route this request matched; `Forbidden` if it has none."""
    route = request.scope.get("route")
    path = getattr(route, "path", "")
    relative = path[len(API_PREFIX):] if path.startswith(API_PREFIX) else path
    permission = ROUTE_PERMISSIONS.get((request.method, relative))
    if permission is None:
        raise Forbidden("this route has no permission rule; access is denied")
    return permission


async def authorize(request: Request, response: Response,
                    principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """The caller, allowed to use this route now (see the module's guarantees 2 and 3)."""
    bind_log_context(tenant=principal.tenant)
    principal.require(required_permission(request))
    svc = services(request)
    own = await spend(request, svc.limiter, "caller", principal.subject,
                       svc.config.key_rate_limit, tenant=principal.tenant)
    await spend(request, svc.limiter, "tenant", principal.tenant,
                 svc.config.tenant_rate_limit, tenant=principal.tenant)
    response.headers.update(own)
    request.state.principal = principal
    return principal


async def spend(request: Request, limiter: RateLimiter, scope: str, identity: str,
                limit: RateLimit, tenant: str | None = None) -> dict[str, str]:
    """Spend one request of `identity`'s budget in `scope`: its `RateLimit-*` headers, or
    `RateLimited` (its headers kept for the 429 response, the refusal counted for `tenant`,
    when known, in `ymera_api_rate_limited_total`) when the budget is empty."""
    decision = await limiter.check(scope, identity, limit)
    headers = decision.headers()
    if not decision.allowed:
        api_metrics().record_rate_limited(tenant)
        request.state.rate_limit_headers = headers
        raise RateLimited(f"rate limit of {limit.requests} requests per {limit.per_s:g}s "
                          f"for this {scope} exceeded", {"scope": scope},
                          retry_after_s=decision.retry_after_s or 1.0)
    return headers


Caller = Annotated[Principal, Depends(authorize)]
"""A route parameter of this type is the authorised, rate-limited caller."""
