"""The HTTP ingress: `create_app` builds the whole FastAPI application from its parts.

    app = create_app(config, orchestrator, auth_store, LocalRateLimiter())  # or an ActorPort

The same function serves tests (through `httpx.ASGITransport`) and a Ray Serve deployment;
nothing here starts Ray, opens storage or reads the environment. The caller owns the port,
the auth store and the limiter, and closes them.

Guarantees:
- every route lives under `/api/v1`; `/health` and `/ready` also answer at the root, without
  credentials; the OpenAPI document is at `/api/v1/openapi.json`, docs at `/api/v1/docs`;
- every other route requires a credential and the permission `routes.access.ROUTE_PERMISSIONS`
  names for it, and is rate-limited before it works;
- every error leaves as the one envelope of `http_errors`, with the request id: platform errors
  with their mapped status, FastAPI's validation failures as `invalid_request` (400) naming the
  field, unknown routes as `not_found`, a wrong method as `method_not_allowed` (405, with
  `Allow`), anything unexpected as a logged, generic 500;
- a path with a trailing slash is not redirected (a redirect would be built from the
  caller's `Host` header): it answers 404 like any unknown path;
- the OpenAPI document declares the credentials (`securitySchemes`: a bearer JWT, an API key
  in `X-API-Key` or `Authorization: ApiKey`) and each protected operation's `security`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from serve_apps import http_errors
from serve_apps.api_config import ApiConfig
from serve_apps.client_address import ClientAddresses, TrustedProxies
from serve_apps.console import mount_console
from serve_apps.credential_cache import CredentialCache
from serve_apps.errors import MethodNotAllowed
from serve_apps.login_throttle import LocalLoginThrottle, LoginThrottle, ThrottlePolicy
from serve_apps.middleware import (
    BodyLimitMiddleware, NulGuardMiddleware, RequestContextMiddleware, SecurityHeadersMiddleware,
    logger,
)
from serve_apps.platform_port import PlatformPort
from serve_apps.rate_limit import RateLimit, RateLimiter
from serve_apps.routes import (
    agents, auth, inbox, knowledge, llm, plan, streams, tasks, users, webhooks, workflows,
)
from serve_apps.routes.access import API_PREFIX, Services
from serve_apps.schemas import ErrorEnvelope, Readiness
from serve_apps.tokens import TokenIssuer
from storage.auth_store import AuthStore
from storage.database import ensure_schema_current
from storage.errors import InvalidRequest, NotFound, YmeraError

READY_TIMEOUT_S: Final = 3.0
_PROBE_LIMIT: Final = RateLimit(requests=1_000_000, per_s=1.0)
# Every error status `http_errors` can answer with, declared on every route with the envelope
# as its body (this also replaces FastAPI's default 422 body: validation failures answer 400).
ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status: {"model": ErrorEnvelope, "description": "The error envelope"}
    for status in sorted({rule.status for rule in http_errors.HTTP_RULES.values()})}


def create_app(config: ApiConfig, port: PlatformPort, auth_store: AuthStore,
               limiter: RateLimiter, behind_proxy: bool = False,
               login_throttle: LoginThrottle | None = None,
               upstream_proxies: TrustedProxies | None = None) -> FastAPI:
    """The API application over `port` (the orchestrator), `auth_store` and `limiter`.
    `behind_proxy`: a proxy (Ray Serve's) echoes the caller's `X-Request-ID` already.
    `login_throttle`: shared per-account login state (default: in process, see
    `login_throttle`); the caller closes one it gives. `upstream_proxies`: the hosts whose
    `X-Forwarded-For` the ASGI server in front already applied to the peer (Serve's uvicorn;
    see `client_address`)."""
    app = FastAPI(title="YMERA", version="1", summary="Multi-agent compute platform on Ray",
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs",
                  redoc_url=None, redirect_slashes=False)
    app.state.services = Services(
        config=config, port=port, auth_store=auth_store, limiter=limiter,
        tokens=TokenIssuer(config.jwt_secret, config.issuer, config.audience,
                           config.access_ttl_s, config.refresh_ttl_s),
        credentials=CredentialCache(config.auth_cache_s),
        addresses=ClientAddresses(TrustedProxies.parse(config.trusted_proxies),
                                  upstream_proxies),
        login_throttle=login_throttle or LocalLoginThrottle(throttle_policy(config)))
    app.state.stream_slots = streams.StreamSlots(config.max_streams_per_caller)
    app.state.api_routes = []  # for the `Allow` header of a 405
    for router in (auth.public, auth.keys, tasks.router, workflows.router, plan.router,
                   llm.router, knowledge.router, webhooks.router, inbox.router, streams.router,
                   agents.router, users.router, probes):
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
        app.state.api_routes.extend(router.routes)
    app.include_router(probes, include_in_schema=False)
    mount_console(app)  # the web console's pages under /console, on the same services
    app.add_exception_handler(YmeraError, _platform_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    # added innermost first: the request context wraps everything, CORS answers preflights
    app.add_middleware(SecurityHeadersMiddleware)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(config.cors_origins), allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-API-Key",
                           "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "RateLimit-Limit",
                            "RateLimit-Remaining", "RateLimit-Reset", "Location"])
    app.add_middleware(NulGuardMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.max_body_bytes,
                       max_depth=config.max_payload_depth,
                       larger_limits={("POST", f"{API_PREFIX}{knowledge.UPLOAD_PATH}"):
                                      max(config.knowledge_max_upload_bytes,
                                          config.max_body_bytes)})
    app.add_middleware(RequestContextMiddleware, echo_kept_id=not behind_proxy)
    return app


def throttle_policy(config: ApiConfig) -> ThrottlePolicy:
    """The per-account login throttle `config` asks for."""
    return ThrottlePolicy(free_failures=config.login_free_failures,
                          max_delay_s=config.login_max_delay_s)


def error_response(request: Request, exc: BaseException,
                   extra_headers: dict[str, str] | None = None) -> JSONResponse:
    """`exc` as the envelope, with its status and headers (`http_errors` decides all three)."""
    status = http_errors.status_for(exc)
    if status >= 500:
        logger.error("%s %s failed: %s: %s", request.method, request.url.path,
                     type(exc).__name__, exc)
    headers = {**(extra_headers or {}), **http_errors.headers_for(exc)}
    return JSONResponse(http_errors.envelope(exc, getattr(request.state, "request_id", None)),
                        status_code=status, headers=headers)


async def _platform_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, exc, getattr(request.state, "rate_limit_headers", None))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [{"field": ".".join(str(p) for p in e.get("loc", ())),
                 "message": e.get("msg", "invalid"), "type": e.get("type", "invalid")}
                for e in exc.errors()]  # the offending input is never echoed back
    first = problems[0] if problems else {"field": "request", "message": "invalid"}
    message = f"{first['field']}: {first['message']}"
    return error_response(request, InvalidRequest(message, {"field": first["field"],
                                                            "errors": problems[:20]}))


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (no such route, wrong method) through the same one mapping."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return error_response(request, NotFound(f"no route {request.url.path}"))
    if exc.status_code == 405:
        allowed = _allowed_methods(request) or (exc.headers or {}).get("Allow", "")
        return error_response(request, MethodNotAllowed(
            f"{request.method} is not allowed here"
            + (f"; allowed: {allowed}" if allowed else ""),
            {"method": request.method, "allowed": allowed}, allowed=allowed))
    return error_response(request, InvalidRequest(
        f"the request was refused: {exc.detail}", {"status": exc.status_code}))


def _allowed_methods(request: Request) -> str:
    """The methods the API's routes at this path take, for `Allow` (Starlette names only those
    of the first route that matches the path, so `GET /users` would go unmentioned next to
    `POST`)."""
    path = request.url.path
    relative = path[len(API_PREFIX):] if path.startswith(f"{API_PREFIX}/") else path
    scope = {"type": "http", "path": relative, "root_path": "", "method": request.method}
    methods: set[str] = set()
    for route in request.app.state.api_routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


probes = APIRouter(tags=["health"])


@probes.get("/health", summary="Liveness: the process serves requests")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _router_probe(port: PlatformPort) -> str:
    """"off" when routing is switched off; else the router answered through the orchestrator."""
    state = await port.router_state()
    return "ok" if state.get("enabled") else "off"


@probes.get("/ready",
            summary="Readiness: orchestrator, router (if on), storage and Redis (if any) answer",
            response_model=Readiness,
            responses={503: {"model": Readiness, "description": "Not ready"}})
async def ready(request: Request) -> JSONResponse:
    svc: Services = request.app.state.services
    checks: dict[str, Any] = {
        "orchestrator": svc.port.status(),
        "router": _router_probe(svc.port),
        "storage": ensure_schema_current(svc.auth_store.engine),
    }
    if svc.config.redis_url:
        checks["redis"] = svc.limiter.check("readiness", "probe", _PROBE_LIMIT)
    results: dict[str, str] = {}
    for name, probe in checks.items():
        try:
            outcome = await asyncio.wait_for(probe, READY_TIMEOUT_S)
            results[name] = outcome if outcome == "off" else "ok"
        except Exception as exc:  # any failure means "not ready"; the reason is logged
            logger.warning("readiness: %s is failing: %s: %s", name, type(exc).__name__, exc)
            results[name] = "failing"
    ok = all(v in ("ok", "off") for v in results.values())
    return JSONResponse({"status": "ready" if ok else "not_ready", "checks": results},
                        status_code=200 if ok else 503)
