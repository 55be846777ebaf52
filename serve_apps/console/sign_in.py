"""Signing in to the console and out of it.

Guarantees:
- a sign-in is the API's login (`routes.auth.login`), unchanged: the same per-address and
  per-account limits, the same one message for every failure, the same audit entries; a
  successful one starts a session (`console.session`) and returns to the page that asked, a
  console page only (any other `next` goes to the overview); it also purges long-ended
  sessions when that is due (`session.purge_if_due`);
- the sign-in form carries a CSRF token bound to a short-lived nonce cookie; a post without
  it is refused (403) and no password is checked;
- signing out takes the session's CSRF token, revokes the session and clears the cookie;
  it is audited as `console_sign_out`.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Final

import pydantic
from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from serve_apps.console import rendering
from serve_apps.console.access import (
    CONSOLE_PREFIX, ConsoleCaller, ConsoleRoute, console_caller, form_fields,
)
from serve_apps.console.session import (
    COOKIE, LOGIN_COOKIE, clear_cookie, end_session, login_csrf_token, purge_if_due, set_cookie,
    settings, start_session, tokens_match,
)
from serve_apps.errors import Forbidden, RateLimited, Unauthenticated
from serve_apps.routes import auth
from serve_apps.routes.access import audit, services
from serve_apps.schemas import LoginBody

LOGIN_NONCE_S: Final = 3600

router = APIRouter(route_class=ConsoleRoute)


def _next_page(raw: str | None) -> str:
    """Where to go after signing in: a console path, never another site."""
    if raw and raw.startswith(f"{CONSOLE_PREFIX}") and not raw.startswith("//") \
            and "\\" not in raw and "sign-" not in raw:
        return raw
    return CONSOLE_PREFIX


def _form(request: Request, nonce: str, status_code: int = 200, message: str | None = None,
          tenant: str = "", username: str = "", next_page: str = CONSOLE_PREFIX) -> Response:
    response = rendering.render(
        request, "sign_in.html", None, status_code=status_code, message=message,
        login_csrf=login_csrf_token(services(request), nonce), tenant=tenant,
        username=username, next_page=next_page)
    set_cookie(request, response, LOGIN_COOKIE, nonce, LOGIN_NONCE_S)
    return response


@router.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    return _form(request, nonce, next_page=_next_page(request.query_params.get("next")))


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    svc = services(request)
    form = await form_fields(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not tokens_match(login_csrf_token(svc, nonce), form.get("csrf_token")):
        raise Forbidden("the sign-in form is missing its CSRF token; reload the page",
                        {"reason": "csrf"})
    tenant = form.get("tenant", "").strip() or "default"
    username = form.get("username", "").strip()
    next_page = _next_page(form.get("next"))
    try:
        body = LoginBody(tenant=tenant, username=username, password=form.get("password", ""))
    except pydantic.ValidationError:
        return _form(request, nonce, 400, "enter a tenant, a username and a password",
                     tenant, username, next_page)
    try:
        pair = await auth.login(body, request)
    except Unauthenticated:
        return _form(request, nonce, 401, auth.LOGIN_FAILED, tenant, username, next_page)
    except RateLimited as exc:
        wait = f" (about {exc.retry_after_s:.0f} s)" if exc.retry_after_s else ""
        return _form(request, nonce, 429, f"too many attempts; try again later{wait}",
                     tenant, username, next_page)
    ttl = settings(request).session_ttl_s
    secret = await start_session(svc, pair.refresh_token, ttl)
    await purge_if_due(request)
    response = RedirectResponse(next_page, status_code=303)
    set_cookie(request, response, COOKIE, secret, min(ttl, svc.tokens.refresh_ttl_s))
    clear_cookie(request, response, LOGIN_COOKIE)
    return response


async def _signed_in(request: Request) -> ConsoleCaller:
    return await console_caller(request, [])


@router.post("/sign-out")
async def sign_out(request: Request,
                   caller: Annotated[ConsoleCaller, Depends(_signed_in)]) -> Response:
    svc = services(request)
    await end_session(svc, caller.session)
    await audit(request, caller.tenant, caller.principal.subject, "console_sign_out")
    address = f"{CONSOLE_PREFIX}/sign-in"
    response: Response = (Response(status_code=204, headers={"HX-Redirect": address})
                          if request.headers.get("hx-request") == "true"
                          else RedirectResponse(address, status_code=303))
    clear_cookie(request, response, COOKIE)
    return response
