"""Small things an attacker could use: redirects built from `Host`, an OpenAPI document that
hides how to authenticate, and one caller holding every event stream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import httpx
import pytest

from serve_apps.app import create_app
from serve_apps.routes.access import ROUTE_PERMISSIONS
from tests.serve_apps.test_app_harness import Platform, client, error_code, platform
from tests.serve_apps.test_app_streams import serving

__all__ = ["client", "platform"]

API = "/api/v1"


@pytest.mark.parametrize("path", [f"{API}/tasks/", f"{API}/health/", f"{API}/agents/"])
async def test_a_trailing_slash_is_not_redirected_to_the_callers_host(client, path) -> None:
    response = await client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert "location" not in response.headers
    assert "evil.example" not in response.text


async def test_the_openapi_document_says_how_each_operation_authenticates(client) -> None:
    document = (await client.get(f"{API}/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer",
                                 "bearerFormat": "JWT"}
    assert (schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == ("header", "X-API-Key")
    assert schemes["apiKeyAuthorization"]["name"] == "Authorization"
    for method, path in ROUTE_PERMISSIONS:
        operation = document["paths"][f"{API}{path}"][method.lower()]
        assert {name for requirement in operation["security"] for name in requirement} == \
            set(schemes), (method, path)
    for public in (("post", "/auth/token"), ("post", "/auth/refresh"), ("get", "/health")):
        assert "security" not in document["paths"][f"{API}{public[1]}"][public[0]]
    parameters = {p["name"] for operation in document["paths"][f"{API}/tasks"].values()
                  for p in operation.get("parameters", [])}
    assert not parameters & {"_bearer", "_key", "_key_authorization"}


async def test_the_in_process_app_sends_no_server_header(client) -> None:
    response = await client.get(f"{API}/health")
    assert "server" not in response.headers


@contextlib.asynccontextmanager
async def open_stream(http: httpx.AsyncClient, headers: dict[str, str]):
    """A tenant stream, yielded once it answered (its status, and `: subscribed` if 200)."""
    async with http.stream("GET", f"{API}/stream", headers=headers) as response:
        if response.status_code == 200:
            lines = response.aiter_lines()  # kept: a dropped reader would close the stream
            async with asyncio.timeout(10):
                while not (await anext(lines)).startswith(": subscribed"):
                    pass
        else:
            await response.aread()
        yield response


async def test_a_caller_holds_at_most_its_share_of_event_streams(platform: Platform) -> None:
    config = dataclasses.replace(platform.config, max_streams_per_caller=2)
    app = create_app(config, platform.orchestrator, platform.auth_store,
                     platform.limiter)
    viewer = platform.bearer("acme", "viewer")
    async with serving(app) as http:
        async with open_stream(http, viewer) as first, open_stream(http, viewer) as second:
            assert first.status_code == second.status_code == 200
            async with open_stream(http, viewer) as third:
                assert third.status_code == 429 and error_code(third) == "rate_limited"
                assert third.headers["retry-after"]
                assert third.json()["error"]["details"]["limit"] == 2
            async with open_stream(http, platform.bearer("acme", "submitter")) as other:
                assert other.status_code == 200  # another caller has its own share
        await asyncio.sleep(0.2)  # the server notices the closed streams
        async with open_stream(http, viewer) as again:
            assert again.status_code == 200  # closed streams gave their places back
    assert app.state.stream_slots._open == {}
