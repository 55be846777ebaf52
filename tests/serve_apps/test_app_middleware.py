"""The ingress's cross-cutting rules: request ids, the error envelope, body limits, strict
validation, security headers, CORS, rate limits and the probes."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from actors.errors import PlatformUnavailable
from serve_apps.app import create_app
from serve_apps.rate_limit import LocalRateLimiter, RateLimit
from tests.serve_apps.test_app_harness import Platform, client, error_code, platform

__all__ = ["client", "platform"]

API = "/api/v1"


class BrokenPort:
    """An orchestrator whose every operation fails with an unexpected error."""

    def __getattr__(self, operation: str) -> Any:
        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("secret internals at /srv/db")
        return broken


class RouterDownPort:
    """The orchestrator answers, with routing on and its router not answering."""

    def __init__(self, orchestrator: Any) -> None:
        self.orchestrator = orchestrator

    def __getattr__(self, operation: str) -> Any:
        return getattr(self.orchestrator, operation)

    async def router_state(self, tenant: str = "default") -> dict[str, Any]:
        raise PlatformUnavailable("the router is not answering")


async def test_request_id_is_echoed_or_generated(platform: Platform, client) -> None:
    given = await client.get("/health", headers={"X-Request-ID": "trace-123"})
    assert given.headers["x-request-id"] == "trace-123"
    insane = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    generated = insane.headers["x-request-id"]
    assert generated != "bad id\twith spaces" and len(generated) == 32
    error = await client.get(f"{API}/tasks", headers={"X-Request-ID": "trace-456"})
    assert error.json()["error"]["request_id"] == "trace-456"


async def test_unknown_route_uses_the_envelope(client) -> None:
    response = await client.get(f"{API}/nothing-here")
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


async def test_unknown_field_is_400_naming_it(platform: Platform, client) -> None:
    response = await client.post(f"{API}/tasks", headers=platform.bearer("acme", "submitter"),
                                 json={"description": "x", "agent_type": "sleeper",
                                       "colour": "blue"})
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    assert response.json()["error"]["details"]["field"] == "body.colour"
    assert "colour" in response.json()["error"]["message"]
    wrong_type = await client.post(f"{API}/tasks", headers=platform.bearer("acme", "submitter"),
                                   json={"description": "x", "priority": "1"})
    assert wrong_type.json()["error"]["details"]["field"] == "body.priority"
    not_json = await client.post(f"{API}/tasks", headers={
        **platform.bearer("acme", "submitter"), "Content-Type": "application/json"},
        content=b"{nope")
    assert not_json.status_code == 400


async def test_nul_characters_are_400_anywhere(platform: Platform, client) -> None:
    headers = platform.bearer("acme", "admin")
    for method, path, body in (
            ("POST", f"{API}/tasks", {"description": "a\x00b", "agent_type": "sleeper"}),
            ("POST", f"{API}/tasks", {"description": "x", "payload": {"k": ["\x00"]}}),
            ("POST", f"{API}/keys", {"name": "ci\x00", "role": "viewer"}),
            ("POST", f"{API}/auth/token", {"username": "root\x00", "password": "p"}),
            ("GET", f"{API}/tasks/abc%00", None),
            ("GET", f"{API}/tasks?batch_id=b%00", None)):
        response = await client.request(method, path, json=body, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert error_code(response) == "invalid_request" and "NUL" in response.text
    assert await platform.auth_store.list_api_keys("acme") == []  # nothing was stored
    assert (await platform.orchestrator.list_tasks(tenant="acme")).tasks == []


async def test_orchestrator_rejection_is_400(platform: Platform, client) -> None:
    response = await client.post(f"{API}/tasks", headers=platform.bearer("acme", "submitter"),
                                 json={"description": "x", "agent_type": "no_such_agent"})
    assert response.status_code == 400 and error_code(response) == "invalid_request"


async def test_big_body_is_413_declared_or_streamed(platform: Platform, client) -> None:
    headers = platform.bearer("acme", "submitter")
    big = {"description": "x", "agent_type": "sleeper", "payload": {"blob": "a" * 70_000}}
    declared = await client.post(f"{API}/tasks", headers=headers, json=big)
    assert declared.status_code == 413 and error_code(declared) == "payload_too_large"
    assert declared.json()["error"]["request_id"] == declared.headers["x-request-id"]

    async def chunks():
        for _ in range(20):
            yield b"a" * 8192

    streamed = await client.post(f"{API}/tasks", headers=headers, content=chunks())
    assert streamed.status_code == 413


async def test_security_headers_and_docs(client) -> None:
    response = await client.get("/health")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    docs = await client.get(f"{API}/docs")
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers
    schema = await client.get(f"{API}/openapi.json")
    assert f"{API}/tasks" in schema.json()["paths"]


async def test_cors_is_off_by_default_and_on_for_listed_origins(platform: Platform,
                                                                client) -> None:
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    off = await client.options(f"{API}/tasks", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    async with platform.client(cors_origins=("https://app.example.com",)) as cors_client:
        on = await cors_client.options(f"{API}/tasks", headers=preflight)
        assert on.headers["access-control-allow-origin"] == "https://app.example.com"
        other = await cors_client.options(
            f"{API}/tasks", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("scope", ["key_rate_limit", "tenant_rate_limit"])
async def test_rate_limit_answers_429_with_headers(platform: Platform, scope) -> None:
    async with platform.client(**{scope: RateLimit(requests=2, per_s=60.0)}) as limited:
        headers = platform.bearer("acme", "viewer")
        first = await limited.get(f"{API}/agents", headers=headers)
        assert first.headers["ratelimit-limit"] in ("2", "100000")
        await limited.get(f"{API}/agents", headers=headers)
        refused = await limited.get(f"{API}/agents", headers=headers)
        assert refused.status_code == 429 and error_code(refused) == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.json()["error"]["details"]["retry_after_s"] >= 1


async def test_unexpected_error_is_a_logged_generic_500(platform: Platform, caplog) -> None:
    app = create_app(platform.config, BrokenPort(), platform.auth_store, LocalRateLimiter())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as broken:
        with caplog.at_level(logging.ERROR, logger="serve_apps.api"):
            response = await broken.get(f"{API}/agents", headers={
                **platform.bearer("acme", "viewer"), "X-Request-ID": "boom-1"})
    assert response.status_code == 500 and error_code(response) == "internal_error"
    assert "secret internals" not in response.text
    assert response.json()["error"]["request_id"] == "boom-1"
    assert any(getattr(r, "request_id", None) == "boom-1" for r in caplog.records)


async def test_probes(platform: Platform, client) -> None:
    for path in ("/health", f"{API}/health"):
        assert (await client.get(path)).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "orchestrator": "ok", "router": "off", "storage": "ok"}  # the harness routes nothing
    app = create_app(platform.config, RouterDownPort(platform.orchestrator),
                     platform.auth_store, LocalRateLimiter())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as routerless:
        not_ready = await routerless.get("/ready")
    assert not_ready.status_code == 503 and not_ready.json()["checks"] == {
        "orchestrator": "ok", "router": "failing", "storage": "ok"}
    app = create_app(platform.config, BrokenPort(), platform.auth_store, LocalRateLimiter())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as broken:
        not_ready = await broken.get(f"{API}/ready")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["orchestrator"] == "failing"


async def test_wrong_method_uses_the_envelope(client) -> None:
    response = await client.delete(f"{API}/tasks")
    assert response.status_code == 405 and error_code(response) == "method_not_allowed"
    assert response.headers["allow"] == "GET, POST"
    assert response.json()["error"]["details"]["allowed"] == "GET, POST"
