"""Deeply nested JSON over HTTP: refused at the door naming the path (even too deep for Python's
parser), never stored; an agent's too-deep result fails its task cleanly; and a too-deep row
already in storage is shown with a marker instead of failing every page that holds it."""

from __future__ import annotations

from typing import Any

from storage.messages import utcnow
from storage.task_store import WriteBatch
from tests.serve_apps.test_app_harness import Platform, client, error_code, platform

__all__ = ["client", "platform"]

API = "/api/v1"
MARKER = {"unreadable": "nested deeper than 128 levels"}


def nested(levels: int, key: str = "a") -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {key: value}
    return value


async def _tasks(platform: Platform, client, tenant: str = "acme") -> list[dict[str, Any]]:
    listed = await client.get(f"{API}/tasks", headers=platform.bearer(tenant, "viewer"))
    assert listed.status_code == 200, listed.text
    return listed.json()["tasks"]


async def test_a_payload_nested_too_deep_is_refused_naming_the_path(platform, client) -> None:
    headers = platform.bearer("acme", "submitter")
    response = await client.post(f"{API}/tasks", headers=headers, json={
        "description": "deep", "agent_type": "sleeper", "payload": {"x": [nested(300)]}})
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    details = response.json()["error"]["details"]
    assert details["field"] == "payload" and details["limit"] == 64
    assert details["path"].startswith("payload.x[0].a.a…(") and details["path"].endswith(".a.a.a")
    assert "nested deeper than 64 levels at payload.x[0]" in response.json()["error"]["message"]
    assert await _tasks(platform, client) == []  # nothing was stored
    within = await client.post(f"{API}/tasks?wait=5", headers=headers, json={
        "description": "deep enough", "agent_type": "sleeper", "payload": {"echo": nested(63)}})
    assert within.status_code == 200 and within.json()["result"]["echo"] == nested(63)


async def test_a_body_too_deep_for_the_json_parser_is_a_clean_400(platform, client) -> None:
    body = '{"description": "deep", "payload": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"
    for path in ("/tasks", "/route"):
        response = await client.post(f"{API}{path}", content=body,
                                     headers={**platform.bearer("acme", "admin"),
                                              "content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["details"]["path"].startswith("payload.a[0][0]")
    assert await _tasks(platform, client) == []


async def test_an_agent_result_nested_too_deep_fails_the_task_not_the_list(platform,
                                                                           client) -> None:
    headers = platform.bearer("acme", "submitter")
    response = await client.post(f"{API}/tasks?wait=5", headers=headers, json={
        "description": "answer deep", "agent_type": "sleeper", "payload": {"nest": 300}})
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "failed" and task["result"] is None
    assert task["error"]["code"] == "invalid_result" and not task["error"]["retryable"]
    assert task["error"]["details"]["path"].startswith("result.nested.n.n")
    assert [t["id"] for t in await _tasks(platform, client)] == [task["id"]]


async def test_a_stored_row_too_deep_to_show_is_shown_with_a_marker(platform, client) -> None:
    """Rows written before the limit existed: inserted straight into storage."""
    now = utcnow()
    deep = nested(300)
    row = {"id": "f" * 32, "tenant": "acme", "description": "old deep task", "payload": deep,
           "agent_type": "sleeper", "status": "failed", "priority": 0, "attempts": 1,
           "max_attempts": 1, "timeout_s": 5.0, "idempotency_key": None, "batch_id": None,
           "route": deep, "result": [deep],
           "error": {"code": "x", "message": "old", "retryable": False, "error_type": "X",
                     "details": deep},
           "created_at": now, "updated_at": now, "finished_at": now}
    store = platform.orchestrator.lifecycle.store
    await store.apply(WriteBatch(new_tasks=[row], events=[
        {"task_id": row["id"], "kind": "failed", "at": now, "attempt": 1, "data": deep}]))

    [listed] = await _tasks(platform, client)
    assert listed["id"] == row["id"]
    assert listed["payload"] == listed["route"] == listed["result"] == MARKER
    assert listed["error"]["details"] == MARKER and listed["error"]["message"] == "old"
    headers = platform.bearer("acme", "viewer")
    one = await client.get(f"{API}/tasks/{row['id']}", headers=headers)
    assert one.status_code == 200 and one.json()["payload"] == MARKER
    events = await client.get(f"{API}/tasks/{row['id']}/events", headers=headers)
    assert events.status_code == 200 and events.json()["events"][-1]["data"] == MARKER
