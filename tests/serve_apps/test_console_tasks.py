"""The console's task pages, dead letters and actions, in process: what each role sees and may
do, CSRF on every action, tenancy (another tenant's task is a 404 page), filters and paging,
and a bulk requeue that says how many it will requeue and then requeues exactly those."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.serve_apps.console_support import (
    CONSOLE, csrf_of, dead_task, finished_task, signed_in,
)
from tests.serve_apps.test_app_harness import Platform, client, platform

__all__ = ["client", "platform"]

_ROW_IDS = re.compile(r'<tr data-task-id="([0-9a-f]+)"')


def _listed(html: str) -> list[str]:
    return _ROW_IDS.findall(html)


async def _status(platform: Platform, task_id: str) -> str:
    return (await platform.orchestrator.get(task_id)).status.value


async def test_the_overview_shows_pools_queues_and_the_tenants_dead_letters(
        platform: Platform, client: httpx.AsyncClient) -> None:
    await dead_task(platform, "acme")
    await dead_task(platform, "globex")
    await dead_task(platform, "globex")
    await finished_task(platform, "acme")
    await signed_in(client, "acme", "viewer")
    page = await client.get(CONSOLE)
    assert page.status_code == 200, page.text
    assert "sleeper" in page.text and "flaky" in page.text  # the pools
    dead_tile = page.text.split("Dead letters</span><strong>")[1].split("</strong>")[0]
    assert dead_tile == "1"  # acme's one, not globex's two
    queued_tile = page.text.split("Queued</span><strong>")[1].split("</strong>")[0]
    assert queued_tile.isdigit()  # the platform's queued tasks, all pools together
    assert "1 succeeded and 1 failed in the last hour" in page.text  # the chart's summary
    assert "<svg" in page.text and "pid" not in page.text  # no process details for a viewer
    assert 'href="/console/dead"' not in page.text  # a viewer lacks dead:read


async def test_the_task_list_is_the_tenants_filtered_and_paged_without_gaps(
        platform: Platform, client: httpx.AsyncClient) -> None:
    ours = [await finished_task(platform, "acme") for _ in range(3)]
    dead = await dead_task(platform, "acme", "needle in a haystack")
    theirs = await finished_task(platform, "globex")
    await signed_in(client, "acme", "viewer")
    everything = _listed((await client.get(f"{CONSOLE}/tasks")).text)
    assert set(everything) == {*ours, dead} and theirs not in everything
    assert _listed((await client.get(f"{CONSOLE}/tasks?status=dead")).text) == [dead]
    assert _listed((await client.get(f"{CONSOLE}/tasks?q=NEEDLE")).text) == [dead]
    assert _listed((await client.get(f"{CONSOLE}/tasks?agent_type=sleeper")).text) == \
        [t for t in everything if t != dead]
    # keyset paging through the store's cursors: two at a time, nothing lost or repeated
    from serve_apps.console.task_filters import TaskFilters, list_filtered
    seen: list[str] = []
    cursor = None
    while True:
        listing = await list_filtered(platform.orchestrator, "acme", TaskFilters(), cursor, 2)
        seen += [t.id for t in listing.tasks]
        if listing.next_cursor is None:
            break
        cursor = listing.next_cursor
    assert seen == everything
    bad = await client.get(f"{CONSOLE}/tasks?status=exploded")
    assert bad.status_code == 400 and "status must be one of" in bad.text


async def test_another_tenants_task_is_a_404_page_like_a_missing_one(
        platform: Platform, client: httpx.AsyncClient) -> None:
    theirs = await finished_task(platform, "globex")
    await signed_in(client, "acme", "admin")
    hidden = await client.get(f"{CONSOLE}/tasks/{theirs}")
    missing = await client.get(f"{CONSOLE}/tasks/{'0' * 32}")
    assert hidden.status_code == missing.status_code == 404
    assert "Not found" in hidden.text and "echo for the console" not in hidden.text
    assert hidden.headers["content-type"].startswith("text/html")
    live = await client.get(f"{CONSOLE}/tasks/{theirs}/live", headers={"HX-Request": "true"})
    assert live.status_code == 404


async def test_a_task_page_shows_payload_result_attempts_and_events(
        platform: Platform, client: httpx.AsyncClient) -> None:
    task_id = await finished_task(platform, "acme")
    await signed_in(client, "acme", "viewer")
    page = await client.get(f"{CONSOLE}/tasks/{task_id}")
    assert page.status_code == 200, page.text
    text = page.text
    assert 'id="task-status" class="badge status-succeeded">succeeded' in text
    assert "&#34;echo&#34;: 5" in text  # payload and result, pretty and escaped
    assert "outcome-succeeded" in text and "<svg class=\"timeline\"" in text
    assert "succeeded</strong>" in text  # the event log
    assert "hx-trigger" not in text.split('id="task-live"')[1].split(">")[0]  # finished
    assert "data-stream" not in text  # nor a stream to follow


async def test_a_task_page_follows_the_tasks_own_event_stream(
        platform: Platform, client: httpx.AsyncClient) -> None:
    task_id = await finished_task(platform, "acme")
    theirs = await finished_task(platform, "globex")
    await signed_in(client, "acme", "viewer")
    async with client.stream("GET", f"{CONSOLE}/tasks/{task_id}/stream") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        body = "".join([chunk async for chunk in stream.aiter_text()])
    kinds = re.findall(r"^event: (\w+)$", body, re.MULTILINE)
    assert kinds[0] == "queued" and kinds[-1] == "succeeded"  # ends after the terminal one
    hidden = await client.get(f"{CONSOLE}/tasks/{theirs}/stream")
    assert hidden.status_code == 404


async def test_a_viewer_sees_no_controls_and_a_forged_action_is_refused(
        platform: Platform, client: httpx.AsyncClient) -> None:
    task_id = await dead_task(platform, "acme")
    csrf = await signed_in(client, "acme", "viewer")
    page = await client.get(f"{CONSOLE}/tasks/{task_id}")
    for control in ("/requeue", "/cancel", "/feedback", "Submit a task"):
        assert control not in page.text
    assert "Submit a task" not in (await client.get(f"{CONSOLE}/tasks")).text
    forged = await client.post(f"{CONSOLE}/tasks/{task_id}/requeue",
                               data={"csrf_token": csrf})
    assert forged.status_code == 403
    assert "lacks permission" in forged.text and "tasks:requeue" in forged.text
    assert await _status(platform, task_id) == "dead"
    assert (await client.get(f"{CONSOLE}/dead")).status_code == 403  # no dead:read


async def test_an_action_without_its_csrf_token_changes_nothing(
        platform: Platform, client: httpx.AsyncClient) -> None:
    task_id = await dead_task(platform, "acme")
    csrf = await signed_in(client, "acme", "operator")
    page = await client.get(f"{CONSOLE}/tasks/{task_id}")
    assert f'action="/console/tasks/{task_id}/requeue"' in page.text
    for refused in ({}, {"csrf_token": "0" * 64}):
        response = await client.post(f"{CONSOLE}/tasks/{task_id}/requeue", data=refused)
        assert response.status_code == 403 and "CSRF" in response.text
    assert await _status(platform, task_id) == "dead"
    done = await client.post(f"{CONSOLE}/tasks/{task_id}/requeue",
                             headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
    assert done.status_code == 204 and done.headers["hx-redirect"].endswith(task_id)
    assert await _status(platform, task_id) != "dead"
    events, _ = await platform.auth_store.list_audit("acme")
    assert any(e.action == "task_requeued" and e.target == task_id for e in events)


async def test_another_tenants_dead_task_cannot_be_requeued(
        platform: Platform, client: httpx.AsyncClient) -> None:
    theirs = await dead_task(platform, "globex")
    csrf = await signed_in(client, "acme", "admin")
    response = await client.post(f"{CONSOLE}/tasks/{theirs}/requeue",
                                 data={"csrf_token": csrf})
    assert response.status_code == 404
    assert await _status(platform, theirs) == "dead"


async def test_bulk_requeue_says_how_many_and_requeues_exactly_those(
        platform: Platform, client: httpx.AsyncClient) -> None:
    alpha = [await dead_task(platform, "acme", f"alpha job {i}") for i in range(3)]
    beta = await dead_task(platform, "acme", "beta job")
    theirs = await dead_task(platform, "globex", "alpha job elsewhere")
    csrf = await signed_in(client, "acme", "operator")
    preview = await client.get(f"{CONSOLE}/dead/requeue?q=alpha&agent_type=flaky",
                               headers={"HX-Request": "true"})
    assert preview.status_code == 200, preview.text
    assert "Requeue 3 dead tasks" in preview.text
    assert {await _status(platform, t) for t in alpha} == {"dead"}  # a preview changes nothing
    missing_token = await client.post(f"{CONSOLE}/dead/requeue",
                                      data={"q": "alpha", "agent_type": "flaky"})
    assert missing_token.status_code == 403
    done = await client.post(f"{CONSOLE}/dead/requeue", data={
        "csrf_token": csrf_of(preview.text), "q": "alpha", "agent_type": "flaky",
        "expected": "3"})
    assert done.status_code == 200, done.text
    assert "Requeued 3 tasks." in done.text
    # each requeued once (they fail again at once: the agent never succeeds), nothing else
    events, _ = await platform.auth_store.list_audit("acme")
    requeued = sorted(e.target for e in events if e.action == "task_requeued")
    assert requeued == sorted(alpha)
    assert await _status(platform, beta) == "dead"
    assert (await platform.orchestrator.get(beta)).attempts == 1
    assert await _status(platform, theirs) == "dead"
    assert csrf == csrf_of(preview.text)


async def test_a_submitter_may_submit_and_cancel_but_not_bulk_requeue(
        platform: Platform, client: httpx.AsyncClient) -> None:
    csrf = await signed_in(client, "acme", "submitter")
    submitted = await client.post(f"{CONSOLE}/tasks", data={
        "csrf_token": csrf, "description": "sleep a while", "agent_type": "sleeper",
        "payload": '{"seconds": 30}'})
    assert submitted.status_code == 303, submitted.text
    task_id = submitted.headers["location"].rsplit("/", 1)[1]
    task = await platform.orchestrator.get(task_id)
    assert task.tenant == "acme" and task.status.value in ("queued", "running")
    page = await client.get(f"{CONSOLE}/tasks/{task_id}")
    assert "/cancel" in page.text
    assert f'data-stream="/console/tasks/{task_id}/stream"' in page.text
    assert 'hx-trigger="stream-event, every 10s"' in page.text
    cancelled = await client.post(f"{CONSOLE}/tasks/{task_id}/cancel", data={"csrf_token": csrf})
    assert cancelled.status_code == 303
    assert await _status(platform, task_id) == "cancelled"
    bad = await client.post(f"{CONSOLE}/tasks", data={
        "csrf_token": csrf, "description": "x", "payload": "{not json"})
    assert bad.status_code == 400 and "payload is not JSON" in bad.text
    assert (await client.get(f"{CONSOLE}/dead/requeue")).status_code == 403


@pytest.mark.parametrize("name", ["htmx.min.js", "console.js", "console.css", "htmx.LICENSE",
                                  "VERSIONS"])
async def test_static_files_are_served_and_nothing_else(client: httpx.AsyncClient,
                                                        name: str) -> None:
    response = await client.get(f"{CONSOLE}/static/{name}")
    assert response.status_code == 200 and response.content
    assert (await client.get(f"{CONSOLE}/static/..%2Fsession.py")).status_code == 404


async def test_routing_feedback_takes_its_permission_and_a_valid_agent_type(
        platform: Platform, client: httpx.AsyncClient) -> None:
    task_id = await finished_task(platform, "acme")
    csrf = await signed_in(client, "acme", "viewer")
    refused = await client.post(f"{CONSOLE}/tasks/{task_id}/feedback",
                                data={"csrf_token": csrf, "agent_type": "flaky"})
    assert refused.status_code == 403 and "tasks:feedback" in refused.text
    async with platform.client() as submitter:
        csrf = await signed_in(submitter, "acme", "submitter")
        page = await submitter.get(f"{CONSOLE}/tasks/{task_id}")
        assert f'action="/console/tasks/{task_id}/feedback"' in page.text
        bad = await submitter.post(f"{CONSOLE}/tasks/{task_id}/feedback",
                                   data={"csrf_token": csrf, "agent_type": "no such type!"})
        assert bad.status_code == 400 and "agent_type" in bad.text
