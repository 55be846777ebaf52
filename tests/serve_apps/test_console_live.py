"""Live updates in the console: the task list and the overview follow the tenant's event
stream (behind the session cookie, the tenant's events only), a run's page its run's stream,
each keeping a slow poll as a fallback; later pages of the list stay as they were."""

from __future__ import annotations

import asyncio
import json
import re

import httpx

from tests.serve_apps.console_support import CONSOLE, finished_task, signed_in
from tests.serve_apps.test_app_harness import Platform, client, platform
from tests.serve_apps.test_app_streams import DEADLINE_S, app_of, serving, sse_messages
from tests.serve_apps.test_app_workflows import CHAIN
from tests.serve_apps.test_app_workflows import submit as submit_run

__all__ = ["client", "platform"]


def _opening_tag(html: str, element_id: str) -> str:
    return html.split(f'id="{element_id}"')[1].split(">")[0]


async def test_the_first_page_of_the_list_and_the_overview_follow_the_tenant_stream(
        platform: Platform, client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await finished_task(platform, "acme")
    await signed_in(client, "acme", "viewer")
    first = _opening_tag((await client.get(f"{CONSOLE}/tasks?status=succeeded")).text,
                         "task-rows")
    assert 'data-stream="/console/stream"' in first
    assert 'hx-trigger="stream-event, every 15s"' in first
    assert 'hx-get="/console/tasks?status=succeeded"' in first  # keeps the filter
    overview = _opening_tag((await client.get(CONSOLE)).text, "overview")
    assert 'data-stream="/console/stream"' in overview and "stream-event" in overview
    from serve_apps.console.task_filters import TaskFilters, list_filtered
    listing = await list_filtered(platform.orchestrator, "acme", TaskFilters(), None, 1)
    later = await client.get(f"{CONSOLE}/tasks?cursor={listing.next_cursor}")
    assert later.status_code == 200
    assert "data-stream" not in _opening_tag(later.text, "task-rows")  # an older page stays


async def test_the_console_stream_carries_the_tenants_task_events_only(
        platform: Platform) -> None:
    async with serving(app_of(platform)) as client:
        await signed_in(client, "acme", "viewer")
        async with asyncio.timeout(DEADLINE_S), \
                client.stream("GET", f"{CONSOLE}/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            messages = sse_messages(response)
            assert (await anext(messages)) == {"comment": "subscribed"}
            theirs = await finished_task(platform, "globex")
            ours = await finished_task(platform, "acme")
            received = []
            async for message in messages:
                if "event" not in message:
                    continue
                received.append(json.loads(message["data"]))
                if message["event"] == "succeeded":
                    break
    assert {event["task_id"] for event in received} == {ours}, theirs
    assert received[0]["kind"] == "queued"


async def test_the_console_stream_needs_a_session(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{CONSOLE}/stream")
    assert response.status_code == 303
    assert response.headers["location"].startswith(f"{CONSOLE}/sign-in")


async def test_a_runs_stream_is_the_runs_own_and_ends_with_the_run(
        platform: Platform, client: httpx.AsyncClient) -> None:
    headers = platform.bearer("acme", "submitter")
    submitted = await submit_run(client, headers, CHAIN, {"n": 3}, wait=10)
    assert submitted.status_code == 200, submitted.text
    run_id = submitted.json()["id"]
    await signed_in(client, "acme", "viewer")
    async with client.stream("GET", f"{CONSOLE}/runs/{run_id}/stream") as stream:
        assert stream.status_code == 200
        body = "".join([chunk async for chunk in stream.aiter_text()])
    kinds = re.findall(r"^event: (\w+)$", body, re.MULTILINE)
    assert "step_succeeded" in kinds and kinds[-1] == "run_succeeded"
    page = await client.get(f"{CONSOLE}/runs/{run_id}")
    assert "data-stream" not in _opening_tag(page.text, "run-live")  # finished: nothing to follow
    async with platform.client() as other:
        await signed_in(other, "globex", "viewer")
        assert (await other.get(f"{CONSOLE}/runs/{run_id}/stream")).status_code == 404
