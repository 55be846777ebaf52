"""Committed task events published on Redis, as the HTTP API's streams will read them: every
event of a tenant's tasks, in commit order, with the ids storage gave them, and nothing of
another tenant's; the platform runs on when Redis is gone."""

from __future__ import annotations

import asyncio
import uuid

from actors.config import OrchestratorConfig, PoolConfig
from actors.orchestrator import Orchestrator
from actors.retry import RetryPolicy
from ml.config import RouterConfig
from storage.database import migrate_async
from storage.event_bus import RedisEventBus
from storage.messages import TaskRequest, TaskStatus
from tests.support.inprocess_platform import vanish
from tests.support.agents import TEST_AGENT_PATHS
from tests.support.inprocess_backend import InProcessBackend
from tests.support.redis_service import REDIS_URL, delete_namespace, require_redis


async def started(tmp_path, redis_url: str, namespace: str) -> Orchestrator:
    url = f"sqlite:///{tmp_path}/ymera.db"
    await migrate_async(url)
    config = OrchestratorConfig(
        database_url=url, namespace=namespace, agent_modules=TEST_AGENT_PATHS,
        default_replicas=0, pools={"sleeper": PoolConfig(replicas=1, concurrency=4)},
        health_interval_s=0.05, health_timeout_s=0.5,
        retry=RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.05),
        router=RouterConfig(enabled=False), redis_url=redis_url)
    orchestrator = Orchestrator(config, backend=InProcessBackend())
    await asyncio.wait_for(orchestrator.ready(), 10)
    return orchestrator


async def stopped(orchestrator: Orchestrator) -> None:
    await orchestrator.lifecycle.writer.stop()
    await vanish(orchestrator)


async def test_a_tenants_events_arrive_in_commit_order_with_their_storage_ids(tmp_path):
    require_redis()
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    orchestrator = await started(tmp_path, REDIS_URL, namespace)
    bus = RedisEventBus(REDIS_URL)
    try:
        async with bus.subscribe(namespace, tenant="acme") as stream:
            ours = await orchestrator.submit_many([
                TaskRequest(f"sleep {i}", {"echo": i}, "sleeper", tenant="acme")
                for i in range(3)])
            theirs = await orchestrator.submit(TaskRequest("sleep", {}, "sleeper", tenant="other"))
            await orchestrator.wait_many([*ours, theirs], 10)
            stored = [e for task_id in ours for e in await orchestrator.events(task_id)]
            received = []
            while len(received) < len(stored):
                event = await stream.get(timeout=5)
                assert event is not None, f"got {len(received)} of {len(stored)} events"
                received.append(event)
            extra = await stream.get(timeout=0.3)
    finally:
        await bus.close()
        await stopped(orchestrator)
        await delete_namespace(namespace)

    assert extra is None
    assert {e.task_id for e in received} == set(ours)
    assert sorted(received, key=lambda e: e.id) == sorted(stored, key=lambda e: e.id)
    assert [e.id for e in received] == sorted(e.id for e in received)
    for task_id in ours:
        assert [e.kind for e in received if e.task_id == task_id][-1] == "succeeded"


async def test_tasks_run_on_when_the_event_bus_is_unreachable(tmp_path):
    orchestrator = await started(tmp_path, "redis://127.0.0.1:1/0", "test-unreachable")
    try:
        task = await orchestrator.wait(
            await orchestrator.submit(TaskRequest("sleep", {"echo": 1}, "sleeper")), 10)
        await asyncio.sleep(0.2)
        assert task.status is TaskStatus.SUCCEEDED
        assert orchestrator.publisher.published == 0 and orchestrator.publisher.dropped > 0
    finally:
        await stopped(orchestrator)
