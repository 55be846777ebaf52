"""Workflow runs over HTTP, through the app on the in-process platform: submit → get → list,
idempotent submission, a bad document refused with its step named and nothing stored, who may
approve, cancel and retry (audited), another tenant's run answering 404 everywhere, and the
run's event stream: resumed after `Last-Event-ID`, ending with the run, within the stream cap."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from serve_apps.permissions import Principal
from tests.serve_apps.test_app_harness import Platform, client, error_code, platform
from tests.serve_apps.test_app_streams import DEADLINE_S, app_of, serving, sse_messages

__all__ = ["client", "platform"]

API = "/api/v1"
MISSING_RUN = "0" * 32

CHAIN = {"name": "chain", "version": "1", "steps": [
    {"id": "first", "agent_type": "sleeper", "payload": {"echo": "${ input.n }"}},
    {"id": "second", "agent_type": "sleeper", "depends_on": ["first"],
     "payload": {"echo": "${ steps.first.output.echo }"}},
]}
CHAIN_YAML = """
name: chain-yaml
version: "2"
steps:
  - id: only
    agent_type: sleeper
    payload: {echo: "${ input.n }"}
"""
GATED = {"name": "gated", "version": "1", "steps": [
    {"id": "first", "agent_type": "sleeper", "payload": {"echo": 1}},
    {"id": "check", "depends_on": ["first"], "approval": {"timeout_s": 3600},
     "payload": {"seen": "${ steps.first.output.echo }"}},
    {"id": "after", "agent_type": "sleeper", "depends_on": ["check"], "payload": {"echo": 2}},
]}


async def submit(client: httpx.AsyncClient, headers: dict[str, str], document: Any,
                 run_input: Any = None, wait: float | None = None) -> httpx.Response:
    path = f"{API}/workflows" + (f"?wait={wait}" if wait else "")
    return await client.post(path, headers=headers,
                             json={"workflow": document, "input": run_input})


def step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    [found] = [s for s in run["steps"] if s["step_id"] == step_id and s["map_index"] == -1]
    return found


async def run_when(client: httpx.AsyncClient, headers: dict[str, str], run_id: str,
                   condition: Any, timeout_s: float = 10.0) -> dict[str, Any]:
    """The run once `condition(run)` holds (read through the API)."""
    async with asyncio.timeout(timeout_s):
        while True:
            response = await client.get(f"{API}/runs/{run_id}", headers=headers)
            assert response.status_code == 200, response.text
            if condition(response.json()):
                return response.json()
            await asyncio.sleep(0.05)


async def awaiting_approval(platform: Platform, client: httpx.AsyncClient,
                            tenant: str = "acme") -> str:
    """A run of `GATED` whose `check` step awaits a person's decision."""
    headers = platform.bearer(tenant, "submitter")
    submitted = await submit(client, headers, GATED)
    assert submitted.status_code == 202, submitted.text
    run_id = submitted.json()["id"]
    await run_when(client, headers, run_id,
                   lambda run: step(run, "check")["status"] == "awaiting_approval")
    return run_id


async def test_submit_then_get_and_list(platform: Platform, client) -> None:
    headers = platform.bearer("acme", "submitter")
    submitted = await submit(client, headers, CHAIN, {"n": 7}, wait=5)
    assert submitted.status_code == 200, submitted.text
    run = submitted.json()
    assert (run["status"], run["tenant"], run["name"], run["input"]) == \
        ("succeeded", "acme", "chain", {"n": 7})
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded"]
    assert step(run, "second")["output"]["echo"] == 7  # the first step's output fed it
    assert submitted.headers["location"] == f"{API}/runs/{run['id']}"

    viewer = platform.bearer("acme", "viewer")
    fetched = await client.get(f"{API}/runs/{run['id']}", headers=viewer)
    assert fetched.status_code == 200 and fetched.json() == run
    assert fetched.json()["spec"]["steps"][1]["depends_on"] == ["first"]

    from_text = await submit(client, headers, CHAIN_YAML, {"n": 3})
    assert from_text.status_code in (200, 202), from_text.text  # 200 once it ran already
    assert (from_text.json()["name"], from_text.json()["version"]) == ("chain-yaml", "2")

    listed = (await client.get(f"{API}/runs", headers=viewer)).json()
    assert [r["id"] for r in listed["runs"]] == [from_text.json()["id"], run["id"]]
    assert "spec" not in listed["runs"][0] and listed["next_cursor"] is None
    first_page = (await client.get(f"{API}/runs?limit=1", headers=viewer)).json()
    assert len(first_page["runs"]) == 1 and first_page["next_cursor"]
    second_page = (await client.get(f"{API}/runs?limit=1&cursor={first_page['next_cursor']}",
                                    headers=viewer)).json()
    assert [r["id"] for r in second_page["runs"]] == [run["id"]]
    succeeded = (await client.get(f"{API}/runs?status=succeeded", headers=viewer)).json()
    assert run["id"] in [r["id"] for r in succeeded["runs"]]
    bad_status = await client.get(f"{API}/runs?status=done", headers=viewer)
    assert bad_status.status_code == 400 and error_code(bad_status) == "invalid_request"
    others = (await client.get(f"{API}/runs", headers=platform.bearer("globex", "admin"))).json()
    assert others["runs"] == []


async def test_without_wait_answers_202_at_once(platform: Platform, client) -> None:
    response = await submit(client, platform.bearer("acme", "submitter"), GATED)
    assert response.status_code == 202, response.text
    assert response.json()["status"] in ("pending", "running", "waiting")
    too_long = await submit(client, platform.bearer("acme", "submitter"), CHAIN, wait=11)
    assert too_long.status_code == 400
    assert too_long.json()["error"]["details"]["field"] == "wait"


async def test_same_idempotency_key_gives_the_same_run_once(platform: Platform, client) -> None:
    headers = {**platform.bearer("acme", "submitter"), "Idempotency-Key": "nightly-2026-12-04"}
    body = {"workflow": CHAIN, "input": {"n": 1}}
    first = await client.post(f"{API}/workflows?wait=5", headers=headers, json=body)
    second = await client.post(f"{API}/workflows?wait=5", headers=headers, json=body)
    assert first.status_code == second.status_code == 200, second.text
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["idempotency_key"] == "nightly-2026-12-04"
    listed = (await client.get(f"{API}/runs", headers=headers)).json()["runs"]
    assert [r["id"] for r in listed] == [first.json()["id"]]
    tasks = (await platform.orchestrator.list_tasks(tenant="acme")).tasks
    assert len(tasks) == 2  # one per step: the second submission started nothing
    other = {**platform.bearer("globex", "submitter"), "Idempotency-Key": "nightly-2026-12-04"}
    third = await client.post(f"{API}/workflows", headers=other, json=body)
    assert third.status_code == 202 and third.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("document, step_id, field", [
    ({"name": "bad", "version": "1",
      "steps": [{"id": "a", "agent_type": "no_such_agent"}]}, "a", "agent_type"),
    ({"name": "bad", "version": "1",
      "steps": [{"id": "a", "agent_type": "sleeper", "depends_on": ["b"]},
                {"id": "b", "agent_type": "sleeper", "depends_on": ["a"]}]}, "a", "depends_on"),
    ({"name": "bad", "version": "1",
      "steps": [{"id": "a", "agent_type": "sleeper",
                 "payload": {"x": "${ steps.nowhere.output }"}}]}, "a", "payload"),
])
async def test_a_bad_document_is_refused_naming_the_step_and_nothing_is_stored(
        platform: Platform, client, document: dict[str, Any], step_id: str, field: str) -> None:
    headers = {**platform.bearer("acme", "submitter"), "Idempotency-Key": "bad-1"}
    response = await submit(client, headers, document)
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    details = response.json()["error"]["details"]
    assert details["step"] == step_id and details["field"].startswith(field), details
    assert repr(step_id) in response.json()["error"]["message"]
    assert (await client.get(f"{API}/runs", headers=headers)).json()["runs"] == []
    assert (await platform.orchestrator.list_tasks(tenant="acme")).tasks == []


async def test_a_malformed_body_is_refused_naming_the_field(platform: Platform, client) -> None:
    headers = platform.bearer("acme", "submitter")
    unknown = await client.post(f"{API}/workflows", headers=headers,
                                json={"workflow": CHAIN, "inputs": {}})
    assert unknown.status_code == 400 and "inputs" in unknown.json()["error"]["details"]["field"]
    not_yaml = await submit(client, headers, "steps: [unclosed")
    assert not_yaml.status_code == 400
    assert not_yaml.json()["error"]["details"]["field"] == "document"


async def test_only_operators_and_up_decide_and_decisions_are_audited(platform: Platform,
                                                                      client) -> None:
    run_id = await awaiting_approval(platform, client)
    approve = f"{API}/runs/{run_id}/steps/check/approve"
    for role in ("viewer", "submitter"):
        refused = await client.post(approve, headers=platform.bearer("acme", role), json={})
        assert refused.status_code == 403 and error_code(refused) == "forbidden"
    operator = platform.bearer("acme", "operator")
    approved = await client.post(approve, headers=operator, json={"comment": "looks right"})
    assert approved.status_code == 200, approved.text
    decision = step(approved.json(), "check")["decision"]
    operator_id = platform.users[("acme", "operator")].id
    assert (decision["decision"], decision["by"], decision["comment"]) == \
        ("approve", f"user:{operator_id}", "looks right")
    again = await client.post(approve, headers=operator, json={})
    assert again.status_code == 409 and error_code(again) == "conflict"
    done = await run_when(client, operator, run_id, lambda run: run["status"] == "succeeded")
    assert step(done, "after")["status"] == "succeeded"

    rejected_id = await awaiting_approval(platform, client)
    rejected = await client.post(f"{API}/runs/{rejected_id}/steps/check/reject",
                                 headers=platform.bearer("acme", "admin"),
                                 json={"comment": "numbers are off"})
    assert rejected.status_code == 200, rejected.text
    assert step(rejected.json(), "check")["decision"]["decision"] == "reject"
    failed = await run_when(client, operator, rejected_id, lambda run: run["status"] == "failed")
    assert step(failed, "after")["status"] != "succeeded"

    events, _ = await platform.auth_store.list_audit("acme")
    audited = {(e.action, e.target, e.actor) for e in events}
    assert ("workflow_step_approved", run_id, f"user:{operator_id}") in audited
    assert ("workflow_step_rejected", rejected_id,
            f"user:{platform.users[('acme', 'admin')].id}") in audited
    unknown_step = await client.post(f"{API}/runs/{run_id}/steps/nope/approve",
                                     headers=operator, json={})
    assert unknown_step.status_code in (404, 409), unknown_step.text


async def test_cancel_and_retry_from_a_step(platform: Platform, client) -> None:
    submitter = platform.bearer("acme", "submitter")
    run_id = await awaiting_approval(platform, client)
    viewer_cancel = await client.post(f"{API}/runs/{run_id}/cancel",
                                      headers=platform.bearer("acme", "viewer"))
    assert viewer_cancel.status_code == 403
    cancelled = await client.post(f"{API}/runs/{run_id}/cancel", headers=submitter)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert step(cancelled.json(), "first")["status"] == "succeeded"  # kept
    assert step(cancelled.json(), "check")["status"] == "cancelled"
    twice = await client.post(f"{API}/runs/{run_id}/cancel", headers=submitter)
    assert twice.status_code == 409 and error_code(twice) == "conflict"

    unknown = await client.post(f"{API}/runs/{run_id}/retry", headers=submitter,
                                json={"from_step": "nowhere"})
    assert unknown.status_code == 404, unknown.text
    retried = await client.post(f"{API}/runs/{run_id}/retry", headers=submitter,
                                json={"from_step": "check"})
    assert retried.status_code == 200, retried.text
    first_task = step(cancelled.json(), "first")["task_id"]
    again = await run_when(client, submitter, run_id,
                           lambda run: step(run, "check")["status"] == "awaiting_approval")
    assert again["status"] == "waiting" and again["generation"] == 1
    assert step(again, "first")["task_id"] == first_task  # the succeeded step did not run again
    retry_running = await client.post(f"{API}/runs/{run_id}/retry", headers=submitter,
                                      json={"from_step": "check"})
    assert retry_running.status_code == 409  # only a failed or cancelled run is retried

    events, _ = await platform.auth_store.list_audit("acme")
    audited = {(e.action, e.target) for e in events}
    assert {("workflow_run_cancelled", run_id), ("workflow_run_retried", run_id)} <= audited


async def test_the_event_log_reads_after_an_id(platform: Platform, client) -> None:
    headers = platform.bearer("acme", "viewer")
    done = await submit(client, platform.bearer("acme", "submitter"), CHAIN, {"n": 2}, wait=5)
    run_id = done.json()["id"]
    events = (await client.get(f"{API}/runs/{run_id}/events", headers=headers)).json()["events"]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert events[0]["kind"] == "run_created" and events[-1]["kind"] == "run_succeeded"
    assert {e["run_id"] for e in events} == {run_id}
    later = await client.get(f"{API}/runs/{run_id}/events?after_id={ids[1]}", headers=headers)
    assert later.json()["events"] == events[2:]


ROUTES = [
    ("GET", "", None),
    ("GET", "/events", None),
    ("GET", "/stream", None),
    ("POST", "/steps/check/approve", {"comment": "mine now"}),
    ("POST", "/steps/check/reject", {}),
    ("POST", "/cancel", None),
    ("POST", "/retry", {"from_step": "check"}),
]


@pytest.mark.parametrize("method, suffix, body", ROUTES)
async def test_another_tenants_run_is_not_found(platform: Platform, client, method, suffix,
                                                body) -> None:
    run_id = await awaiting_approval(platform, client, "acme")
    for path_run in (run_id, MISSING_RUN):
        response = await client.request(method, f"{API}/runs/{path_run}{suffix}", json=body,
                                        headers=platform.bearer("globex", "admin"))
        assert response.status_code == 404 and error_code(response) == "not_found"
        assert path_run in response.json()["error"]["message"]
    kept = await platform.orchestrator.get_run(run_id, tenant="acme")
    assert kept.run.status.value == "waiting"  # untouched
    assert {s.step_id: s.status.value for s in kept.steps}["check"] == "awaiting_approval"


def decoded(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    for message in messages:
        assert message["id"] == str(json.loads(message["data"])["id"])
        assert message["event"] == json.loads(message["data"])["kind"]
    return [json.loads(m["data"]) for m in messages]


async def run_stream(client: httpx.AsyncClient, run_id: str,
                     headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every event the run's stream sends before it ends by itself."""
    async with asyncio.timeout(DEADLINE_S), client.stream(
            "GET", f"{API}/runs/{run_id}/stream", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        return decoded([m async for m in sse_messages(response) if "event" in m])


async def test_a_run_stream_follows_the_run_to_its_end_and_resumes(platform: Platform) -> None:
    viewer = platform.bearer("acme", "viewer")
    async with serving(app_of(platform)) as client:
        run_id = await awaiting_approval(platform, client)
        live = asyncio.create_task(run_stream(client, run_id, viewer))
        await asyncio.sleep(0.3)
        assert not live.done()  # the run waits for a person: the stream stays open
        approved = await client.post(f"{API}/runs/{run_id}/steps/check/approve",
                                     headers=platform.bearer("acme", "operator"), json={})
        assert approved.status_code == 200, approved.text
        events = await live
        stored = [e.to_json() for e in await platform.orchestrator.run_events(
            run_id, tenant="acme")]
        assert events == stored
        assert events[-1]["kind"] == "run_succeeded"
        assert "step_approved" in [e["kind"] for e in events]

        resumed = await run_stream(client, run_id,
                                   {**viewer, "Last-Event-ID": str(events[1]["id"])})
        assert resumed == events[2:]
        past_the_end = await run_stream(client, run_id,
                                        {**viewer, "Last-Event-ID": str(events[-1]["id"])})
        assert past_the_end == []
        bad = await client.get(f"{API}/runs/{run_id}/stream",
                               headers={**viewer, "Last-Event-ID": "yesterday"})
        assert bad.status_code == 400


async def test_run_streams_count_toward_the_callers_stream_cap(platform: Platform) -> None:
    viewer = platform.bearer("acme", "viewer")
    app = app_of(platform)
    app.state.stream_slots.per_caller = 1
    async with serving(app) as client:
        run_id = await awaiting_approval(platform, client)
        async with client.stream("GET", f"{API}/runs/{run_id}/stream",
                                 headers=viewer) as first:
            assert first.status_code == 200
            second = await client.get(f"{API}/runs/{run_id}/stream", headers=viewer)
            assert second.status_code == 429 and "retry-after" in second.headers
        user = platform.users[("acme", "viewer")]
        async with asyncio.timeout(5):
            while app.state.stream_slots.held(Principal("acme", "viewer", f"user:{user.id}")):
                await asyncio.sleep(0.05)
        gone = await client.post(f"{API}/runs/{run_id}/cancel",
                                 headers=platform.bearer("acme", "submitter"))
        assert gone.status_code == 200
        events = await run_stream(client, run_id, viewer)  # the place was given back
        assert events[-1]["kind"] == "run_cancelled"

