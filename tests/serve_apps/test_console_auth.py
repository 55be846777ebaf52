"""Signing in to the web console and out of it: the cookie's attributes, the API's login rules,
CSRF on the sign-in form, revocation on sign-out, expiry, and the way an unsigned-in request
is sent to sign in."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx

from serve_apps.app import create_app
from serve_apps.console.session import COOKIE, session_id
from storage.messages import utcnow
from tests.serve_apps.console_support import CONSOLE, csrf_of, sign_in, signed_in
from tests.serve_apps.test_app_harness import Platform, client, platform

__all__ = ["client", "platform"]


def _set_cookie(response: httpx.Response, name: str) -> str:
    (header,) = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    return header


async def test_sign_in_sets_a_strict_http_only_cookie_and_returns_to_the_page(
        platform: Platform, client: httpx.AsyncClient) -> None:
    response = await sign_in(client, "acme", "operator")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"{CONSOLE}/tasks"
    cookie = _set_cookie(response, COOKIE).lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "secure" not in cookie  # plain http here
    page = await client.get(f"{CONSOLE}/tasks")
    assert page.status_code == 200
    assert "<strong>acme</strong>" in page.text and "<strong>operator</strong>" in page.text
    assert "content-security-policy" in page.headers
    audit = [e.action for e in (await platform.auth_store.list_audit("acme"))[0]]
    assert "login" in audit


async def test_over_https_the_cookie_is_secure(platform: Platform) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(platform)),
                                 base_url="https://testserver") as secure_client:
        response = await sign_in(secure_client, "acme", "viewer")
        assert response.status_code == 303, response.text
        assert "secure" in _set_cookie(response, COOKIE).lower()


async def test_a_wrong_password_is_refused_with_the_apis_message_and_no_session(
        platform: Platform, client: httpx.AsyncClient) -> None:
    response = await sign_in(client, "acme", "operator", password="not the password")
    assert response.status_code == 401
    assert "invalid username or password" in response.text
    assert not any(h.startswith(f"{COOKIE}=") for h in response.headers.get_list("set-cookie"))
    assert (await client.get(f"{CONSOLE}/tasks")).status_code == 303
    audit = [e.action for e in (await platform.auth_store.list_audit("acme"))[0]]
    assert "login_failed" in audit and "login" not in audit


async def test_a_sign_in_without_its_csrf_token_is_refused_before_any_password_check(
        platform: Platform, client: httpx.AsyncClient) -> None:
    await client.get(f"{CONSOLE}/sign-in")
    response = await client.post(f"{CONSOLE}/sign-in", data={
        "tenant": "acme", "username": "operator@acme",
        "password": "correct horse battery staple"})
    assert response.status_code == 403
    assert "CSRF" in response.text
    events, _ = await platform.auth_store.list_audit("acme")
    assert not any(e.action in ("login", "login_failed") for e in events)


async def test_sign_out_revokes_the_session_everywhere(
        platform: Platform, client: httpx.AsyncClient) -> None:
    csrf = await signed_in(client, "acme", "viewer")
    stolen = client.cookies.get(COOKIE)
    assert (await client.post(f"{CONSOLE}/sign-out", data={})).status_code == 403  # no CSRF
    assert (await client.get(f"{CONSOLE}/tasks")).status_code == 200  # still signed in
    out = await client.post(f"{CONSOLE}/sign-out", data={"csrf_token": csrf})
    assert out.status_code == 303 and out.headers["location"] == f"{CONSOLE}/sign-in"
    # the same cookie, presented to another replica (a fresh app over the same store)
    async with platform.client() as other_replica:
        other_replica.cookies.set(COOKIE, stolen or "", path="/console")
        replay = await other_replica.get(f"{CONSOLE}/tasks")
        assert replay.status_code == 303
        assert replay.headers["location"].startswith(f"{CONSOLE}/sign-in")
    row = await platform.auth_store.refresh_token(session_id(stolen or ""))
    assert row is not None and row.revoked_at is not None
    assert row.replaced_by is None  # revoked in place, no dead row rotated in


async def test_a_sign_in_purges_long_ended_sessions_at_most_once_per_period(
        platform: Platform) -> None:
    app = _app(platform)
    user_id = platform.users[("acme", "viewer")].id
    long_ago = utcnow() - timedelta(days=3)
    await platform.auth_store.add_refresh_token("ended-1", user_id, long_ago)
    async with _client_of(app) as client:
        csrf = await signed_in(client, "acme", "viewer")
        assert await platform.auth_store.refresh_token("ended-1") is None
        live = client.cookies.get(COOKIE) or ""
        assert await platform.auth_store.refresh_token(session_id(live)) is not None
        await platform.auth_store.add_refresh_token("ended-2", user_id, long_ago)
        await client.post(f"{CONSOLE}/sign-out", data={"csrf_token": csrf})
        await signed_in(client, "acme", "viewer")  # within the hour: no second purge
        assert await platform.auth_store.refresh_token("ended-2") is not None
        app.state.console_settings.purge_every_s = 0
        await signed_in(client, "acme", "viewer")
        assert await platform.auth_store.refresh_token("ended-2") is None
        # the session signed out a moment ago ended too recently to be purged
        assert await platform.auth_store.refresh_token(session_id(live)) is not None


def _app(platform: Platform) -> Any:
    return create_app(platform.config, platform.orchestrator, platform.auth_store,
                      platform.limiter)


def _client_of(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://testserver")


async def test_a_session_expires(platform: Platform) -> None:
    app = _app(platform)
    app.state.console_settings.session_ttl_s = 1
    async with _client_of(app) as client:
        await signed_in(client, "acme", "viewer")
        await asyncio.sleep(1.2)
        expired = await client.get(f"{CONSOLE}/tasks")
        assert expired.status_code == 303
        assert expired.headers["location"].startswith(f"{CONSOLE}/sign-in")


async def test_without_a_session_pages_send_you_to_sign_in_and_back(
        client: httpx.AsyncClient) -> None:
    page = await client.get(f"{CONSOLE}/tasks?status=dead")
    assert page.status_code == 303
    assert page.headers["location"] == f"{CONSOLE}/sign-in?next=%2Fconsole%2Ftasks%3Fstatus%3Ddead"
    fragment = await client.get(f"{CONSOLE}/tasks", headers={"HX-Request": "true"})
    assert fragment.status_code == 204
    assert fragment.headers["hx-redirect"].startswith(f"{CONSOLE}/sign-in")
    form = await client.get(page.headers["location"])
    assert 'name="next" value="/console/tasks?status=dead"' in form.text
    assert csrf_of(form.text)


async def test_a_disabled_user_is_signed_out(platform: Platform) -> None:
    app = _app(platform)
    async with _client_of(app) as client:
        await signed_in(client, "acme", "submitter")
        user_id = platform.users[("acme", "submitter")].id
        await platform.auth_store.set_disabled(user_id, True)
        app.state.services.credentials.forget("user", user_id)  # as after auth_cache_s
        assert (await client.get(f"{CONSOLE}/tasks")).status_code == 303


async def test_next_never_leaves_the_console(client: httpx.AsyncClient) -> None:
    form = await client.get(f"{CONSOLE}/sign-in?next=https://evil.example/")
    assert 'name="next" value="/console"' in form.text
    form = await client.get(f"{CONSOLE}/sign-in?next=//evil.example/console")
    assert 'name="next" value="/console"' in form.text
