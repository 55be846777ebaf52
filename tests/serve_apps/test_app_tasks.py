"""Tasks over HTTP: the submit → wait → get path, idempotency, tenant isolation, dead letters,
and requeue with its audit event."""

from __future__ import annotations

import pytest

from tests.serve_apps.test_app_harness import Platform, client, error_code, platform

__all__ = ["client", "platform"]

API = "/api/v1"


async def test_login_submit_wait_get(platform: Platform, client) -> None:
    login = await client.post(f"{API}/auth/token",
                              json={"tenant": "acme", "username": "submitter@acme",
                                    "password": "correct horse battery staple"})
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    submitted = await client.post(f"{API}/tasks?wait=5", headers=headers, json={
        "description": "echo", "payload": {"echo": 7}, "agent_type": "sleeper"})
    assert submitted.status_code == 200, submitted.text
    task = submitted.json()
    assert task["status"] == "succeeded" and task["result"]["echo"] == 7
    assert task["tenant"] == "acme"
    assert submitted.headers["location"] == f"{API}/tasks/{task['id']}"
    fetched = await client.get(f"{API}/tasks/{task['id']}", headers=headers)
    assert fetched.status_code == 200 and fetched.json()["id"] == task["id"]
    attempts = await client.get(f"{API}/tasks/{task['id']}/attempts", headers=headers)
    assert [a["outcome"] for a in attempts.json()["attempts"]] == ["succeeded"]
    events = await client.get(f"{API}/tasks/{task['id']}/events", headers=headers)
    assert events.status_code == 200 and events.json()["events"]


@pytest.mark.usefixtures("gc_paused")
async def test_a_task_and_its_attempts_show_what_they_cost(platform: Platform, client) -> None:
    headers = platform.bearer("acme", "submitter")
    submitted = await client.post(f"{API}/tasks?wait=5", headers=headers, json={
        "description": "burn", "payload": {"burn_s": 0.2}, "agent_type": "sleeper"})
    assert submitted.status_code == 200, submitted.text
    task = submitted.json()

    [attempt] = (await client.get(f"{API}/tasks/{task['id']}/attempts",
                                  headers=headers)).json()["attempts"]
    assert attempt["cpu_s"] == pytest.approx(0.2, abs=0.08)
    assert attempt["duration_s"] >= attempt["cpu_s"] - 0.01
    fetched = (await client.get(f"{API}/tasks/{task['id']}", headers=headers)).json()
    assert (fetched["cpu_s"], fetched["wall_s"]) == (attempt["cpu_s"], attempt["duration_s"])
    assert (task["cpu_s"], task["wall_s"]) == (fetched["cpu_s"], fetched["wall_s"])
    listed = (await client.get(f"{API}/tasks", headers=headers)).json()["tasks"]
    assert [t["cpu_s"] for t in listed if t["id"] == task["id"]] == [fetched["cpu_s"]]


async def test_without_wait_answers_202_at_once(platform: Platform, client) -> None:
    response = await client.post(f"{API}/tasks", headers=platform.bearer("acme", "submitter"),
                                 json={"description": "slow", "agent_type": "sleeper",
                                       "payload": {"seconds": 0.5}})
    assert response.status_code == 202 and response.json()["status"] in ("queued", "running")


async def test_wait_beyond_the_bound_is_refused(platform: Platform, client) -> None:
    response = await client.post(f"{API}/tasks?wait=11",
                                 headers=platform.bearer("acme", "submitter"),
                                 json={"description": "x", "agent_type": "sleeper"})
    assert response.status_code == 400 and response.json()["error"]["details"]["field"] == "wait"


async def test_same_idempotency_key_gives_same_task_run_once(platform: Platform, client) -> None:
    headers = {**platform.bearer("acme", "submitter"), "Idempotency-Key": "order-42"}
    body = {"description": "once", "agent_type": "sleeper", "payload": {"echo": 1}}
    first = await client.post(f"{API}/tasks?wait=5", headers=headers, json=body)
    second = await client.post(f"{API}/tasks?wait=5", headers=headers, json=body)
    assert first.json()["id"] == second.json()["id"]
    attempts = await client.get(f"{API}/tasks/{first.json()['id']}/attempts", headers=headers)
    assert len(attempts.json()["attempts"]) == 1
    other_tenant = {**platform.bearer("globex", "submitter"), "Idempotency-Key": "order-42"}
    third = await client.post(f"{API}/tasks", headers=other_tenant, json=body)
    assert third.json()["id"] != first.json()["id"]  # keys are per tenant


async def _dead_task(platform: Platform, client, tenant: str = "acme") -> str:
    response = await client.post(f"{API}/tasks?wait=5", headers=platform.bearer(tenant, "admin"),
                                 json={"description": "always fails", "agent_type": "flaky",
                                       "payload": {"succeed_on": 99}, "max_attempts": 1})
    assert response.json()["status"] == "dead", response.text
    return response.json()["id"]


@pytest.mark.parametrize("method, suffix, body", [
    ("GET", "", None),
    ("POST", "/cancel", None),
    ("POST", "/feedback", {"agent_type": "sleeper"}),
    ("POST", "/requeue", None),
    ("GET", "/attempts", None),
    ("GET", "/events", None),
])
async def test_another_tenants_task_is_not_found(platform: Platform, client, method, suffix,
                                                 body) -> None:
    task_id = await _dead_task(platform, client, "acme")
    response = await client.request(method, f"{API}/tasks/{task_id}{suffix}", json=body,
                                    headers=platform.bearer("globex", "admin"))
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert task_id in response.json()["error"]["message"]
    missing = await client.request(method, f"{API}/tasks/{'0' * 32}{suffix}", json=body,
                                   headers=platform.bearer("globex", "admin"))
    assert missing.status_code == 404  # the same answer as a task that does not exist
    assert (await platform.orchestrator.get(task_id)).status.value == "dead"  # untouched


async def test_lists_show_only_own_tenant(platform: Platform, client) -> None:
    acme_dead = await _dead_task(platform, client, "acme")
    globex_dead = await _dead_task(platform, client, "globex")
    for path in ("/tasks", "/dead"):
        acme = await client.get(f"{API}{path}", headers=platform.bearer("acme", "admin"))
        ids = [t["id"] for t in acme.json()["tasks"]]
        assert acme_dead in ids and globex_dead not in ids
    filtered = await client.get(f"{API}/tasks?status=succeeded&limit=5",
                                headers=platform.bearer("acme", "viewer"))
    assert filtered.status_code == 200 and filtered.json()["tasks"] == []


async def test_a_requeue_is_audited(platform: Platform, client) -> None:
    task_id = await _dead_task(platform, client)
    headers = platform.bearer("acme", "operator")
    requeued = await client.post(f"{API}/tasks/{task_id}/requeue", headers=headers)
    assert requeued.status_code == 200 and requeued.json()["status"] in ("queued", "running",
                                                                         "dead")
    events, _ = await platform.auth_store.list_audit("acme")
    assert ("task_requeued", task_id) in {(e.action, e.target) for e in events}
    assert all(e.request_id for e in events)
    # scaling the shared pools: tests/serve_apps/test_app_platform.py


async def test_agents_view_and_route_without_router(platform: Platform, client) -> None:
    headers = platform.bearer("acme", "viewer")
    agents = await client.get(f"{API}/agents", headers=headers)
    assert agents.status_code == 200
    assert "sleeper" in agents.json()["agent_types"]
    assert "examples" not in agents.json()["agent_types"]["sleeper"]
    # what the planner shows a model, also shown to people writing payloads by hand
    from actors.agents import Calculator

    hint = agents.json()["agent_types"]["calculator"]["payload_hint"]
    assert hint == Calculator.spec.payload_hint and hint
    assert "tasks" not in agents.json()  # no task counts of other tenants
    routed = await client.post(f"{API}/route", headers=headers, json={"description": "x"})
    assert routed.status_code == 409 and error_code(routed) == "conflict"  # routing is off


async def test_agent_stats_count_only_the_callers_tenant(platform: Platform, client) -> None:
    for tenant, count in (("acme", 2), ("globex", 1)):
        for _ in range(count):
            done = await client.post(f"{API}/tasks?wait=5",
                                     headers=platform.bearer(tenant, "submitter"),
                                     json={"description": "echo", "agent_type": "sleeper"})
            assert done.status_code == 200, done.text
    for tenant, count in (("acme", 2), ("globex", 1)):
        stats = await client.get(f"{API}/agents/stats", headers=platform.bearer(tenant, "viewer"))
        assert stats.status_code == 200, stats.text
        sleeper = stats.json()["agent_types"]["sleeper"]
        assert (sleeper["succeeded"], sleeper["finished"], sleeper["attempts"]) == \
            (count, count, count)


async def test_a_batch_status_counts_the_callers_tasks_of_that_batch(platform: Platform,
                                                                     client) -> None:
    for seconds in (0, 0, 30):
        submitted = await client.post(f"{API}/tasks", headers=platform.bearer("acme", "submitter"),
                                      json={"description": "sleep", "agent_type": "sleeper",
                                            "payload": {"seconds": seconds}, "batch_id": "b-1"})
        assert submitted.status_code == 202, submitted.text
    viewer = platform.bearer("acme", "viewer")
    await platform.orchestrator.wait_many(
        [t.id for t in (await platform.orchestrator.list_tasks(batch_id="b-1")).tasks
         if t.payload["seconds"] == 0], 10)
    status = await client.get(f"{API}/batches/b-1", headers=viewer)
    assert status.status_code == 200, status.text
    body = status.json()
    assert (body["batch_id"], body["total"], body["finished"], body["counts"]["succeeded"]) == \
        ("b-1", 3, 2, 2)
    for other in (platform.bearer("globex", "viewer"), viewer):
        path = f"{API}/batches/" + ("b-1" if other is not viewer else "no-such-batch")
        missing = await client.get(path, headers=other)
        assert missing.status_code == 404 and error_code(missing) == "not_found"
