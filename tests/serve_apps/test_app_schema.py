"""The HTTP API against its own OpenAPI document: schemathesis generates requests for every
operation (authenticated as an admin of one tenant), and every answer must be free of server
errors, use a status code the document declares, and match the declared response schema.

The app runs in process over the shared harness here, and deployed on Ray Serve in
`test_serve_deployment.py` (against the document it serves). Generation is bounded and
deterministic: a fixed number of examples per operation, derandomized, no example database.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance, status_code_conformance,
)

from tests.serve_apps.test_app_harness import Platform, platform

__all__ = ["platform"]

API = "/api/v1"
BASE_URL = "http://testserver"
MAX_EXAMPLES = 15
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
# The Server-Sent Events streams never end on their own, so a generated call would not return.
EXCLUDED = {("GET", f"{API}/tasks/{{task_id}}/stream"), ("GET", f"{API}/stream")}


def _request_kwargs(case: Any, headers: dict[str, str], base_url: str) -> dict[str, Any]:
    """The generated case as keyword arguments of `httpx.AsyncClient.request`."""
    data = case.as_transport_kwargs(base_url=base_url, headers=headers)
    kwargs: dict[str, Any] = {"method": data["method"], "url": data["url"],
                              "headers": data["headers"], "params": data.get("params")}
    if data.get("cookies"):
        kwargs["cookies"] = data["cookies"]
    if "json" in data:
        kwargs["json"] = data["json"]
    elif "data" in data:
        body = data["data"]
        if isinstance(body, (bytes, str)):
            kwargs["content"] = body
        else:
            kwargs["data"] = body
    if "files" in data:
        kwargs["files"] = data["files"]
    return kwargs


def exercise(operation: Any, send: Any, headers: dict[str, str],
             base_url: str = BASE_URL) -> list[int]:
    """Run up to `MAX_EXAMPLES` generated cases of `operation`; the status codes answered."""
    statuses: list[int] = []

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.data_too_large])
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        kwargs = _request_kwargs(case, headers, base_url)
        response = send(kwargs)
        statuses.append(response.status_code)
        case.validate_response(response, checks=CHECKS, headers=kwargs["headers"])

    check()
    return statuses


def operations_of(document: dict[str, Any]) -> list[Any]:
    """Every operation of the document that returns (the two endless streams left out)."""
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    selected = [op for op in operations if (op.method.upper(), op.path) not in EXCLUDED]
    assert len(operations) - len(selected) == len(EXCLUDED)
    return selected


async def test_every_operation_conforms_to_the_openapi_document(platform: Platform) -> None:
    # A short `wait` bound keeps generated synchronous submissions from idling for seconds.
    async with platform.client(wait_max_s=0.2) as client:
        # The document comes from the app itself; it is fetched over the same in-process
        # client (rather than `from_asgi`, whose own test client would drive the app from
        # another thread and event loop than the orchestrator's).
        document = await client.get(f"{API}/openapi.json")
        assert document.status_code == 200, document.text
        selected = operations_of(document.json())
        headers = platform.bearer("acme", "admin")
        loop = asyncio.get_running_loop()

        def send(kwargs: dict[str, Any]) -> httpx.Response:
            return asyncio.run_coroutine_threadsafe(client.request(**kwargs), loop).result(30)

        # Hypothesis drives generation synchronously; it runs in a worker thread and sends
        # each request back to this loop, where the app and the orchestrator live.
        statuses = {}
        for operation in selected:
            statuses[f"{operation.method.upper()} {operation.path}"] = await asyncio.to_thread(
                exercise, operation, send, headers)
        assert all(statuses.values()), statuses
        print(f"{len(statuses)} operations, {sum(map(len, statuses.values()))} calls")
        for name, codes in statuses.items():
            print(name, len(codes), sorted(set(codes)))
        # The credentials work: operations without required inputs do succeed.
        for name in (f"GET {API}/tasks", f"GET {API}/users", f"GET {API}/agents"):
            assert 200 in statuses[name], (name, statuses[name])
