"""Task events as Server-Sent Events over a real HTTP server: a task's whole history in order,
ending with its terminal event; a resume from `Last-Event-ID` with nothing repeated; tenant
isolation; the tenant stream over Redis, resumed; and polling storage when there is no Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis

from serve_apps.app import create_app
from storage import redis_keys
from tests.serve_apps.test_app_harness import Platform, error_code, platform, running_platform
from tests.support.redis_service import REDIS_URL, redis_namespace

__all__ = ["platform"]

API = "/api/v1"
DEADLINE_S = 15.0


@pytest.fixture
async def redis_platform(tmp_path) -> AsyncIterator[Platform]:
    """The harness's platform, with the orchestrator publishing on Redis under a fresh
    namespace and the API reading the same one."""
    async with redis_namespace() as namespace, running_platform(
            tmp_path, namespace=namespace, redis_url=REDIS_URL) as running:
        yield running


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` served over real HTTP on a free local port (ASGI transports buffer
    the whole response, so an endless stream needs a server)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off",
                                           log_level="warning", http="h11", ws="none"))
    serve = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     timeout=DEADLINE_S) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(serve, 10)


def app_of(platform: Platform) -> FastAPI:
    return create_app(platform.config, platform.orchestrator, platform.auth_store,
                      platform.limiter)


async def sse_messages(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Each SSE message of `response` as its fields; a comment as {"comment": text}."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            fields["comment"] = line[1:].strip()
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def stream_events(client: httpx.AsyncClient, path: str,
                        headers: dict[str, str]) -> tuple[httpx.Response, list[dict[str, str]]]:
    """Every event message of a stream that ends by itself (bounded by `DEADLINE_S`)."""
    async with asyncio.timeout(DEADLINE_S), client.stream("GET", path,
                                                          headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return response, []
        return response, [m async for m in sse_messages(response) if "event" in m]


def stored_json(events: list[Any]) -> list[dict[str, Any]]:
    return [{"id": e.id, "task_id": e.task_id, "kind": e.kind, "at": e.at.isoformat(),
             "attempt": e.attempt, "data": e.data} for e in events]


def decoded(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    for message in messages:
        assert message["id"] == str(json.loads(message["data"])["id"])
        assert message["event"] == json.loads(message["data"])["kind"]
    return [json.loads(m["data"]) for m in messages]


async def submit(client: httpx.AsyncClient, headers: dict[str, str], seconds: float = 0.3,
                 wait: bool = False) -> str:
    response = await client.post(f"{API}/tasks" + ("?wait=10" if wait else ""),
                                 headers=headers, json={
                                     "description": "sleep", "agent_type": "sleeper",
                                     "payload": {"seconds": seconds}})
    assert response.status_code in (200, 202), response.text
    return response.json()["id"]


async def test_a_task_stream_sends_every_event_in_order_and_closes(redis_platform) -> None:
    headers = redis_platform.bearer("acme", "viewer")
    async with serving(app_of(redis_platform)) as client:
        task_id = await submit(client, redis_platform.bearer("acme", "submitter"), 0.5)
        response, messages = await stream_events(client, f"{API}/tasks/{task_id}/stream",
                                                 headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    stored = await redis_platform.orchestrator.events(task_id)
    assert decoded(messages) == stored_json(stored)
    assert messages[-1]["event"] == "succeeded"


async def test_a_resumed_task_stream_sends_only_the_later_events(redis_platform) -> None:
    headers = redis_platform.bearer("acme", "viewer")
    async with serving(app_of(redis_platform)) as client:
        task_id = await submit(client, redis_platform.bearer("acme", "submitter"), 0.3)
        _, first = await stream_events(client, f"{API}/tasks/{task_id}/stream", headers)
        second_id = first[1]["id"]
        _, resumed = await stream_events(client, f"{API}/tasks/{task_id}/stream",
                                         {**headers, "Last-Event-ID": second_id})
        _, by_query = await stream_events(
            client, f"{API}/tasks/{task_id}/stream?after_id={second_id}", headers)
        _, past_the_end = await stream_events(client, f"{API}/tasks/{task_id}/stream",
                                              {**headers, "Last-Event-ID": first[-1]["id"]})
    assert len(first) >= 3
    assert resumed == first[2:] and by_query == first[2:]
    assert past_the_end == []  # the task has ended: the stream closes at once


async def test_another_tenants_task_stream_is_not_found(redis_platform) -> None:
    async with serving(app_of(redis_platform)) as client:
        task_id = await submit(client, redis_platform.bearer("acme", "submitter"), wait=True)
        for path in (f"{API}/tasks/{task_id}/stream", f"{API}/tasks/{'0' * 32}/stream"):
            response, messages = await stream_events(
                client, path, redis_platform.bearer("globex", "admin"))
            assert response.status_code == 404 and error_code(response) == "not_found"
            assert messages == []


async def subscribers(namespace: str, tenant: str) -> int:
    client = Redis.from_url(REDIS_URL)
    try:
        channel = redis_keys.tenant_channel(namespace, tenant)
        return dict(await client.pubsub_numsub(channel))[channel.encode()]
    finally:
        await client.aclose()


async def test_the_tenant_stream_carries_its_tasks_only(redis_platform) -> None:
    namespace = redis_platform.config.namespace
    async with serving(app_of(redis_platform)) as client:
        received: list[dict[str, str]] = []
        async with asyncio.timeout(DEADLINE_S), client.stream(
                "GET", f"{API}/stream",
                headers=redis_platform.bearer("acme", "viewer")) as response:
            assert response.status_code == 200
            messages = sse_messages(response)
            assert (await anext(messages)) == {"comment": "subscribed"}
            ours = [await submit(client, redis_platform.bearer("acme", "submitter"))
                    for _ in range(2)]
            theirs = await submit(client, redis_platform.bearer("globex", "submitter"))
            done = await redis_platform.orchestrator.wait_many([*ours, theirs], 10)
            assert all(task.status.value == "succeeded" for task in done)
            stored = sorted([e for t in ours for e in await redis_platform.orchestrator.events(t)],
                            key=lambda e: e.id)
            async for message in messages:
                if "event" in message:
                    received.append(message)
                if len(received) == len(stored):
                    break
            await messages.aclose()
        async with asyncio.timeout(5):  # the client left: the subscription closes
            while await subscribers(namespace, "acme"):
                await asyncio.sleep(0.05)
    assert decoded(received) == stored_json(stored)
    assert {e["task_id"] for e in decoded(received)} == set(ours)


async def test_without_redis_a_task_stream_polls_storage(platform: Platform, client) -> None:
    headers = platform.bearer("acme", "viewer")
    task_id = await submit(client, platform.bearer("acme", "submitter"), 0.8)
    response, messages = await stream_events(client, f"{API}/tasks/{task_id}/stream", headers)
    assert response.status_code == 200
    stored = await platform.orchestrator.events(task_id)
    assert decoded(messages) == stored_json(stored) and messages[-1]["event"] == "succeeded"
    _, resumed = await stream_events(client, f"{API}/tasks/{task_id}/stream",
                                     {**headers, "Last-Event-ID": messages[1]["id"]})
    assert resumed == messages[2:]


async def test_without_redis_the_tenant_stream_polls_storage(platform: Platform) -> None:
    async with serving(app_of(platform)) as client, asyncio.timeout(DEADLINE_S), \
            client.stream("GET", f"{API}/stream",
                          headers=platform.bearer("acme", "viewer")) as response:
        assert response.status_code == 200
        messages = sse_messages(response)
        assert (await anext(messages)) == {"comment": "subscribed"}
        ours = await submit(client, platform.bearer("acme", "submitter"))
        theirs = await submit(client, platform.bearer("globex", "submitter"))
        await platform.orchestrator.wait_many([ours, theirs], 10)
        stored = await platform.orchestrator.events(ours)
        received = await events_of(messages, len(stored))
    assert decoded(received) == stored_json(stored)


async def test_a_resumed_tenant_stream_sends_what_it_missed_then_live_ones(
        redis_platform) -> None:
    orchestrator = redis_platform.orchestrator
    async with serving(app_of(redis_platform)) as client:
        first = await submit(client, redis_platform.bearer("acme", "submitter"), wait=True)
        await submit(client, redis_platform.bearer("globex", "submitter"), wait=True)
        second = await submit(client, redis_platform.bearer("acme", "submitter"), wait=True)
        history = sorted([*await orchestrator.events(first), *await orchestrator.events(second)],
                         key=lambda e: e.id)
        resume_after = history[1].id  # the client saw two events before it disconnected
        async with asyncio.timeout(DEADLINE_S), client.stream(
                "GET", f"{API}/stream", headers={**redis_platform.bearer("acme", "viewer"),
                                                 "Last-Event-ID": str(resume_after)}) as response:
            assert response.status_code == 200
            messages = sse_messages(response)
            missed = await events_of(messages, len(history) - 2)
            assert (await anext(messages)) == {"comment": "subscribed"}
            live = await submit(client, redis_platform.bearer("acme", "submitter"))
            await orchestrator.wait(live, 10)
            live_events = await orchestrator.events(live)
            followed = await events_of(messages, len(live_events))
    assert decoded(missed) == stored_json(history[2:])
    assert decoded(followed) == stored_json(live_events)


async def events_of(messages: AsyncIterator[dict[str, str]], count: int) -> list[dict[str, str]]:
    """The next `count` event messages of a stream, skipping comments."""
    received = []
    while len(received) < count:
        message = await anext(messages)
        if "event" in message:
            received.append(message)
    return received


async def test_a_malformed_last_event_id_is_refused(platform: Platform, client) -> None:
    task_id = await submit(client, platform.bearer("acme", "submitter"), wait=True)
    response = await client.get(f"{API}/tasks/{task_id}/stream",
                                headers={**platform.bearer("acme", "viewer"),
                                         "Last-Event-ID": "abc"})
    assert response.status_code == 400 and error_code(response) == "invalid_request"


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with platform.client() as client:
        yield client
