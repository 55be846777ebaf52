"""Who is using the console, may they do this, and did this page ask them to.

    router = APIRouter(route_class=ConsoleRoute)

    @router.post("/tasks/{task_id}/requeue")
    async def requeue(request: Request,
                      caller: Annotated[ConsoleCaller, Depends(acting("POST",
                                                              "/tasks/{task_id}/requeue"))]):

Guarantees, before a console route does its own work:
1. the caller is the session cookie's (`console.session`); without a valid session a page
   redirects to the sign-in page (an HTMX request is told to, with `HX-Redirect`);
2. the caller's role grants the permission the API's route for the same thing requires: each
   console route names that API route, `(method, path)`, and the permission is looked up in
   `routes.access.ROUTE_PERMISSIONS`, so the console and the API cannot disagree; without it
   the answer is a 403 page and nothing is done;
3. a state-changing request (any method but GET and HEAD) carries the session's CSRF token,
   as the form field `csrf_token` or the `X-CSRF-Token` header (HTMX sends it); without it, or
   with another session's, the answer is 403 and nothing is done;
4. one request is spent from the caller's and then the tenant's budget, as the API does;
5. every platform error leaves as an HTML page (or fragment, for HTMX) with the status
   `http_errors` gives it: another tenant's task is the same 404 page as a missing one.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import RedirectResponse, Response

from actors.logs import bind_log_context
from serve_apps import http_errors
from serve_apps.console import rendering
from serve_apps.console.session import (
    Session, csrf_token, session_principal, tokens_match,
)
from serve_apps.errors import Forbidden, Unauthenticated
from serve_apps.middleware import logger
from serve_apps.permissions import Principal
from serve_apps.routes.access import ROUTE_PERMISSIONS, services, spend
from storage.errors import InvalidRequest, YmeraError

CONSOLE_PREFIX: Final = "/console"
SAFE_METHODS: Final = frozenset({"GET", "HEAD"})
MAX_FORM_BYTES: Final = 64 * 1024


@dataclasses.dataclass(frozen=True)
class ConsoleCaller:
    """The signed-in caller of a console request, with its session's CSRF token."""

    principal: Principal
    session: Session
    csrf: str

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    def can(self, method: str, path: str) -> bool:
        """Whether the caller may use the API route `(method, path)`: what pages ask before
        they show a control."""
        return self.principal.can(ROUTE_PERMISSIONS[(method, path)])


def permission_of(method: str, path: str) -> str:
    """The permission of the API route `(method, path)`; `KeyError` for a route that is not
    there (a programming error, found at import)."""
    return ROUTE_PERMISSIONS[(method, path)]


def acting(method: str, path: str,
           *also: tuple[str, str]) -> Callable[[Request], Awaitable[ConsoleCaller]]:
    """A dependency: the caller, allowed to do what the API route `(method, path)` (and each
    route of `also`) does (the module's guarantees 1 to 4)."""
    permissions = [permission_of(method, path)] + [permission_of(m, p) for m, p in also]

    async def dependency(request: Request) -> ConsoleCaller:
        return await console_caller(request, permissions)

    return dependency


async def console_caller(request: Request, permissions: list[str]) -> ConsoleCaller:
    svc = services(request)
    principal, session = await session_principal(request)
    bind_log_context(tenant=principal.tenant)
    caller = ConsoleCaller(principal, session, csrf_token(svc, session.jti))
    request.state.console_caller = caller
    for permission in permissions:
        principal.require(permission)
    if request.method not in SAFE_METHODS:
        form = await form_fields(request)
        presented = request.headers.get("x-csrf-token") or form.get("csrf_token")
        if not tokens_match(caller.csrf, presented):
            raise Forbidden("this action is missing its CSRF token; reload the page and retry",
                            {"reason": "csrf"})
    await spend(request, svc.limiter, "caller", principal.subject, svc.config.key_rate_limit,
                tenant=principal.tenant)
    await spend(request, svc.limiter, "tenant", principal.tenant,
                svc.config.tenant_rate_limit, tenant=principal.tenant)
    return caller


async def form_fields(request: Request) -> dict[str, str]:
    """The request's URL-encoded form (the last value of each field), read once."""
    cached = getattr(request.state, "console_form", None)
    if cached is not None:
        return cached
    fields: dict[str, str] = {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise InvalidRequest("the form is too large", {"limit": MAX_FORM_BYTES})
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest("the form is not UTF-8") from exc
        for name, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
            fields[name] = value
    request.state.console_form = fields
    return fields


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def sign_in_address(request: Request) -> str:
    """The sign-in page, returning here afterwards (a console path only, never elsewhere)."""
    target = request.url.path
    if request.url.query and request.method in SAFE_METHODS:
        target += f"?{request.url.query}"
    if is_htmx(request) or request.method not in SAFE_METHODS:
        target = request.headers.get("hx-current-url", "") or CONSOLE_PREFIX
        target = urllib.parse.urlsplit(target).path or CONSOLE_PREFIX
    return f"{CONSOLE_PREFIX}/sign-in?" + urllib.parse.urlencode({"next": target})


def error_page(request: Request, exc: BaseException) -> Response:
    """A platform error as the console shows it (guarantee 5)."""
    if isinstance(exc, Unauthenticated):
        address = sign_in_address(request)
        if is_htmx(request):
            return Response(status_code=204, headers={"HX-Redirect": address})
        return RedirectResponse(address, status_code=303)
    status = http_errors.status_for(exc)
    if status >= 500:
        logger.error("%s %s failed: %s: %s", request.method, request.url.path,
                     type(exc).__name__, exc)
    message = str(exc) if status < 500 else "something went wrong on our side"
    headers = http_errors.headers_for(exc)
    caller = getattr(request.state, "console_caller", None)
    template = "_error.html" if is_htmx(request) else "error.html"
    return rendering.render(request, template, caller, status_code=status, headers=headers,
                            status=status, message=message,
                            request_id=getattr(request.state, "request_id", None))


class ConsoleRoute(APIRoute):
    """A console route: its platform and validation errors become pages, not JSON."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except YmeraError as exc:
                return error_page(request, exc)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                field = ".".join(str(p) for p in first.get("loc", ()))
                return error_page(request, InvalidRequest(
                    f"{field}: {first.get('msg', 'invalid')}", {"field": field}))

        return console_handler
