"""The API's metrics and request logs, on the app in process: requests counted by route
template, method and status with their durations, rate-limit refusals by tenant, and the
request's id (and tenant) on every log line of the request."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from actors.logs import configure_logging
from serve_apps.metrics import InMemoryApiMetrics, MetricsSnapshot, api_metrics
from serve_apps.rate_limit import RateLimit
from tests.serve_apps.test_app_harness import Platform, client, platform

__all__ = ["client", "platform"]

API = "/api/v1"


@pytest.fixture
def recorder() -> InMemoryApiMetrics:
    metrics = api_metrics()
    assert isinstance(metrics, InMemoryApiMetrics)  # outside a Serve replica
    return metrics


@pytest.fixture
def json_logs() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("json", "INFO")
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def growth(before: MetricsSnapshot, after: MetricsSnapshot) -> dict[str, dict[Any, Any]]:
    """What was recorded between two snapshots (durations as observation counts)."""
    def diff(old: dict[Any, Any], new: dict[Any, Any]) -> dict[Any, Any]:
        return {k: v - old.get(k, 0) for k, v in new.items() if v != old.get(k, 0)}

    return {"requests": diff(before.requests, after.requests),
            "durations": diff({k: c for k, (c, _) in before.durations.items()},
                              {k: c for k, (c, _) in after.durations.items()}),
            "rate_limited": diff(before.rate_limited, after.rate_limited)}


async def test_requests_are_counted_by_route_template_method_and_status(
        platform: Platform, client, recorder: InMemoryApiMetrics) -> None:
    headers = platform.bearer("acme", "viewer")
    before = recorder.snapshot()
    assert (await client.get("/health")).status_code == 200
    assert (await client.get(f"{API}/tasks/t-123", headers=headers)).status_code == 404
    assert (await client.get(f"{API}/tasks/t-456", headers=headers)).status_code == 404
    assert (await client.get(f"{API}/tasks")).status_code == 401
    assert (await client.delete(f"{API}/tasks", headers=headers)).status_code == 405
    after = recorder.snapshot()
    recorded = growth(before, after)
    assert recorded["requests"] == {
        ("/health", "GET", "200"): 1,
        (f"{API}/tasks/{{task_id}}", "GET", "404"): 2,
        (f"{API}/tasks", "GET", "401"): 1,
        (f"{API}/tasks", "DELETE", "405"): 1,
    }
    assert recorded["durations"] == {("/health", "GET"): 1, (f"{API}/tasks/{{task_id}}", "GET"): 2,
                                     (f"{API}/tasks", "GET"): 1, (f"{API}/tasks", "DELETE"): 1}
    _, seconds = after.durations[("/health", "GET")]
    assert seconds > before.durations.get(("/health", "GET"), (0, 0.0))[1]


async def test_unmatched_paths_and_odd_methods_use_bounded_labels(
        client, recorder: InMemoryApiMetrics) -> None:
    before = recorder.snapshot()
    assert (await client.get(f"{API}/no/such/route-8f3a")).status_code == 404
    assert (await client.get("/elsewhere%00")).status_code == 400  # refused before routing
    assert (await client.request("BREW", "/health")).status_code == 405
    recorded = growth(before, recorder.snapshot())
    assert recorded["requests"] == {("unmatched", "GET", "404"): 1,
                                    ("unmatched", "GET", "400"): 1,
                                    ("/health", "OTHER", "405"): 1}


@pytest.mark.parametrize("scope", ["key_rate_limit", "tenant_rate_limit"])
async def test_a_rate_limit_refusal_is_counted_for_the_callers_tenant(
        platform: Platform, recorder: InMemoryApiMetrics, scope: str) -> None:
    async with platform.client(**{scope: RateLimit(requests=1, per_s=60.0)}) as limited:
        headers = platform.bearer("globex", "viewer")
        before = recorder.snapshot()
        assert (await limited.get(f"{API}/agents", headers=headers)).status_code == 200
        assert (await limited.get(f"{API}/agents", headers=headers)).status_code == 429
        recorded = growth(before, recorder.snapshot())
    assert recorded["rate_limited"] == {"globex": 1}
    assert recorded["requests"] == {(f"{API}/agents", "GET", "200"): 1,
                                    (f"{API}/agents", "GET", "429"): 1}


async def test_a_refused_login_is_counted_without_a_tenant(
        platform: Platform, recorder: InMemoryApiMetrics) -> None:
    async with platform.client(key_rate_limit=RateLimit(requests=1, per_s=60.0)) as limited:
        body = {"username": "nobody", "password": "wrong password here"}
        before = recorder.snapshot()
        assert (await limited.post(f"{API}/auth/token", json=body)).status_code == 401
        assert (await limited.post(f"{API}/auth/token", json=body)).status_code == 429
        recorded = growth(before, recorder.snapshot())
    assert recorded["rate_limited"] == {"-": 1}


async def test_every_log_line_of_a_request_carries_its_id_and_tenant(
        platform: Platform, client, json_logs: None, capsys) -> None:
    response = await client.get(f"{API}/agents", headers={
        **platform.bearer("acme", "viewer"), "X-Request-ID": "trace-metrics-1"})
    assert response.status_code == 200
    unauthenticated = await client.get(f"{API}/agents",
                                       headers={"X-Request-ID": "trace-metrics-2"})
    assert unauthenticated.status_code == 401
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()
             if line.startswith("{")]
    access = {line["request_id"]: line for line in lines
              if line["logger"] == "serve_apps.api" and "/api/v1/agents" in line["message"]}
    assert access["trace-metrics-1"]["message"].startswith("GET /api/v1/agents 200")
    assert access["trace-metrics-1"]["tenant"] == "acme"
    assert access["trace-metrics-2"]["message"].startswith("GET /api/v1/agents 401")
    assert "tenant" not in access["trace-metrics-2"]
    assert all(line.get("request_id") in ("trace-metrics-1", "trace-metrics-2")
               for line in lines if line["logger"].startswith("serve_apps"))


async def test_a_requests_log_lines_name_the_task_it_submitted_or_read(
        platform: Platform, client, json_logs: None, capsys) -> None:
    headers = platform.bearer("acme", "submitter")
    submitted = await client.post(f"{API}/tasks", headers={**headers, "X-Request-ID": "sub-1"},
                                  json={"description": "echo", "agent_type": "sleeper"})
    assert submitted.status_code in (200, 202), submitted.text
    task_id = submitted.json()["id"]
    read = await client.get(f"{API}/tasks/{task_id}", headers={**headers,
                                                               "X-Request-ID": "read-1"})
    assert read.status_code == 200
    missing = await client.get(f"{API}/tasks/{'0' * 32}", headers={**headers,
                                                                   "X-Request-ID": "miss-1"})
    assert missing.status_code == 404
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()
             if line.startswith("{")]
    access = {line["request_id"]: line for line in lines if line["logger"] == "serve_apps.api"}
    for request_id in ("sub-1", "read-1"):
        assert (access[request_id]["task_id"], access[request_id]["agent_type"]) == (
            task_id, "sleeper"), access[request_id]
    assert "task_id" not in access["miss-1"]  # no task was found to name


async def test_a_requests_log_lines_name_the_workflow_run_it_submitted_or_read(
        platform: Platform, client, json_logs: None, capsys) -> None:
    headers = platform.bearer("acme", "submitter")
    document = {"name": "logged", "steps": [{"id": "a", "agent_type": "sleeper"}]}
    submitted = await client.post(f"{API}/workflows", headers={**headers, "X-Request-ID": "wf-1"},
                                  json={"workflow": document, "input": {}})
    assert submitted.status_code in (200, 202), submitted.text
    run_id = submitted.json()["id"]
    read = await client.get(f"{API}/runs/{run_id}", headers={**headers, "X-Request-ID": "wf-2"})
    assert read.status_code == 200
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()
             if line.startswith("{")]
    access = {line["request_id"]: line for line in lines if line["logger"] == "serve_apps.api"}
    assert access["wf-1"]["run_id"] == run_id and access["wf-2"]["run_id"] == run_id
