"""Guessing passwords and keys over HTTP: spoofed X-Forwarded-For buys nothing, an account
slows down after failed logins, failed authentication is limited per address, unknown key
ids cost storage once, and logins name their tenant."""

from __future__ import annotations

import dataclasses
import secrets
from collections import Counter
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from serve_apps.app import create_app
from serve_apps.client_address import TrustedProxies
from serve_apps.login_throttle import LocalLoginThrottle, LoginThrottle, ThrottlePolicy
from serve_apps.rate_limit import LocalRateLimiter, RateLimit
from tests.serve_apps.test_app_harness import PASSWORD, Platform, error_code, platform

__all__ = ["platform"]

API = "/api/v1"
ATTACKER = "203.0.113.9"


def app_of(platform: Platform, throttle: LoginThrottle | None = None,
           upstream: TrustedProxies | None = None, **config_changes: Any) -> FastAPI:
    """A fresh app (own limiter and throttle) over the platform, with the harness's generous
    request budgets but the default failed-authentication and login-throttle settings."""
    config = dataclasses.replace(platform.config, **config_changes)
    return create_app(config, platform.orchestrator, platform.auth_store,
                      LocalRateLimiter(), login_throttle=throttle, upstream_proxies=upstream)


def from_peer(app: FastAPI, peer: str) -> httpx.AsyncClient:
    """A client whose requests reach `app` from socket peer `peer`."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(peer, 41000)),
                             base_url="http://testserver")


def login(tenant: str, username: str, password: str) -> dict[str, str]:
    return {"tenant": tenant, "username": username, "password": password}


async def test_spoofed_forwarded_for_values_get_no_fresh_budgets(platform: Platform) -> None:
    limit = 30  # per day here, so that no budget comes back while the test runs
    app = app_of(platform, failed_auth_rate_limit=RateLimit(requests=limit, per_s=86400.0))
    statuses: Counter[int] = Counter()
    async with from_peer(app, ATTACKER) as attacker:
        for i in range(163):  # a different account each time: only the address limit applies
            response = await attacker.post(
                f"{API}/auth/token", json=login("acme", f"guess-{i}", "wrong password!!"),
                headers={"X-Forwarded-For": f"198.51.100.{i}"})
            statuses[response.status_code] += 1
        right = await attacker.post(f"{API}/auth/token",
                                    json=login("acme", "admin@acme", PASSWORD),
                                    headers={"X-Forwarded-For": "192.0.2.200"})
    assert statuses == {401: limit, 429: 163 - limit}
    assert right.status_code == 429 and int(right.headers["retry-after"]) >= 1
    events, _ = await platform.auth_store.list_audit("-", limit=1000)
    assert len(events) == limit and {e.client for e in events} == {ATTACKER}
    async with from_peer(app, "198.51.100.1") as someone_else:  # its own budget
        ok = await someone_else.post(f"{API}/auth/token",
                                     json=login("acme", "admin@acme", PASSWORD))
    assert ok.status_code == 200, ok.text


async def test_behind_serves_proxy_a_local_caller_cannot_choose_its_address(
        platform: Platform) -> None:
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from serve_apps.deployment import serve_proxy_trust

    limit = 30
    app = app_of(platform, upstream=serve_proxy_trust(),
                 failed_auth_rate_limit=RateLimit(requests=limit, per_s=86400.0))
    # what Serve's HTTP proxy runs in front of the app: uvicorn trusting loopback peers
    proxied = ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1,::1")
    transport = httpx.ASGITransport(app=proxied, client=("127.0.0.1", 41000))
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as local:
        for i in range(163):
            response = await local.post(
                f"{API}/auth/token", json=login("acme", f"guess-{i}", "wrong password!!"),
                headers={"X-Forwarded-For": f"198.51.100.{i}"})
            statuses[response.status_code] += 1
    assert statuses == {401: limit, 429: 163 - limit}
    events, _ = await platform.auth_store.list_audit("-", limit=1000)
    assert {e.client for e in events} == {"127.0.0.1"}


async def test_an_account_under_attack_refuses_even_the_right_password_for_a_while(
        platform: Platform) -> None:
    free = platform.config.login_free_failures
    app = app_of(platform, LocalLoginThrottle(ThrottlePolicy(free_failures=free,
                                                             base_delay_s=30.0)))
    for i in range(free):  # guesses from many addresses: the account throttle still counts
        async with from_peer(app, f"198.51.100.{i}") as guesser:
            wrong = await guesser.post(f"{API}/auth/token",
                                       json=login("acme", "admin@acme", f"guess number {i}!"))
            assert wrong.status_code == 401
    async with from_peer(app, "192.0.2.1") as owner:
        refused = await owner.post(f"{API}/auth/token",
                                   json=login("acme", "admin@acme", PASSWORD))
        assert refused.status_code == 429 and error_code(refused) == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        assert refused.json()["error"]["details"]["scope"] == "login_account"
        others = await owner.post(f"{API}/auth/token",
                                  json=login("globex", "admin@globex", PASSWORD))
        assert others.status_code == 200  # another account is not slowed
    events, _ = await platform.auth_store.list_audit("acme")
    throttled = [e for e in events if e.action == "login_throttled"]
    assert len(throttled) == 1 and throttled[0].client == f"198.51.100.{free - 1}"
    assert throttled[0].details == {"failures": free, "retry_after_s": 30.0}


async def test_an_unknown_account_is_throttled_exactly_like_a_real_one(
        platform: Platform) -> None:
    app = app_of(platform)
    answers = {}
    async with from_peer(app, ATTACKER) as client:
        for username in ("admin@acme", "nobody@acme"):
            statuses = [(await client.post(
                f"{API}/auth/token", json=login("acme", username, "wrong password!!"))
            ).status_code for _ in range(platform.config.login_free_failures + 1)]
            answers[username] = statuses
    assert answers["admin@acme"] == answers["nobody@acme"] == [401] * 5 + [429]


async def test_failed_authentication_on_any_route_is_limited_per_address(
        platform: Platform) -> None:
    app = app_of(platform, failed_auth_rate_limit=RateLimit(requests=3, per_s=60.0))
    bad = {"Authorization": "Bearer not-a-token"}
    async with from_peer(app, ATTACKER) as attacker, from_peer(app, "192.0.2.1") as other:
        statuses = [(await attacker.get(f"{API}/tasks", headers=bad)).status_code
                    for _ in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        assert (await attacker.get(f"{API}/tasks", headers=bad)).headers["retry-after"]
        assert (await other.get(f"{API}/tasks", headers=bad)).status_code == 401
        refresh = await other.post(f"{API}/auth/refresh", json={"refresh_token": "forged"})
        assert refresh.status_code == 401
        assert [(await other.post(f"{API}/auth/refresh", json={"refresh_token": "forged"})
                 ).status_code for _ in range(3)] == [401, 429, 429]  # the same budget
        # the address's own valid credentials keep working
        valid = await attacker.get(f"{API}/agents", headers=platform.bearer("acme", "viewer"))
        assert valid.status_code == 200


async def test_unknown_key_ids_do_not_each_cost_a_storage_read(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real = platform.auth_store.api_key

    async def counted(key_id: str, tenant: str | None = None):
        reads.append(key_id)
        return await real(key_id, tenant)

    monkeypatch.setattr(platform.auth_store, "api_key", counted)
    app = app_of(platform, failed_auth_rate_limit=RateLimit(requests=5, per_s=60.0))
    same = f"ymk_{secrets.token_hex(16)}_{secrets.token_urlsafe(33)}"
    async with from_peer(app, ATTACKER) as attacker:
        for _ in range(4):  # the same unknown id: remembered as missing after one read
            assert (await attacker.get(f"{API}/agents", headers={"X-API-Key": same})
                    ).status_code == 401
        assert len(reads) == 1
        statuses = [(await attacker.get(f"{API}/agents", headers={
            "X-API-Key": f"ymk_{secrets.token_hex(16)}_{secrets.token_urlsafe(33)}"})
        ).status_code for _ in range(20)]  # random ids: stopped once the budget is spent
    assert statuses.count(401) == 1 and statuses.count(429) == 19
    assert len(reads) == 2


async def test_a_login_names_its_tenant_and_usernames_repeat_across_tenants(
        platform: Platform) -> None:
    app = app_of(platform)
    async with from_peer(app, "192.0.2.1") as client:
        created = await client.post(f"{API}/users", headers=platform.bearer("globex", "admin"),
                                    json={"username": "admin@acme", "role": "viewer",
                                          "password": "globex's own viewer password"})
        assert created.status_code == 201, created.text  # no hint that acme has the name
        clash = await client.post(f"{API}/users", headers=platform.bearer("acme", "admin"),
                                  json={"username": "viewer@acme", "role": "viewer",
                                        "password": "globex's own viewer password"})
        assert clash.status_code == 409 and "taken in this tenant" in clash.text
        as_acme = await client.post(f"{API}/auth/token",
                                    json=login("acme", "admin@acme", PASSWORD))
        as_globex = await client.post(f"{API}/auth/token", json=login(
            "globex", "admin@acme", "globex's own viewer password"))
        crossed = await client.post(f"{API}/auth/token",
                                    json=login("globex", "admin@acme", PASSWORD))
        no_tenant = await client.post(f"{API}/auth/token", json={
            "username": "admin@acme", "password": PASSWORD})  # "default" has no such user
    assert as_acme.status_code == as_globex.status_code == 200
    assert crossed.status_code == no_tenant.status_code == 401
    tenants = {}
    for name, response in (("acme", as_acme), ("globex", as_globex)):
        token = response.json()["access_token"]
        tenants[name] = platform.services().tokens.verify_access(token).tenant
    assert tenants == {"acme": "acme", "globex": "globex"}


async def test_a_guessable_password_is_refused_naming_the_field(platform: Platform) -> None:
    app = app_of(platform)
    async with from_peer(app, "192.0.2.1") as client:
        for password in ("aaaaaaaaaaaa", "hunter2hunter2", "acmeacme1234", "password-acme"):
            refused = await client.post(f"{API}/users", headers=platform.bearer("acme", "admin"),
                                        json={"username": "hunter", "role": "viewer",
                                              "password": password})
            assert refused.status_code == 400, (password, refused.text)
            error = refused.json()["error"]
            assert error["details"]["field"] == "password", error
            assert error["details"]["rule"] in ("strength", "min_length")
            assert password not in refused.text
    assert "hunter" not in {u.username for u in await platform.auth_store.list_users("acme")}
