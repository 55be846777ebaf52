"""The orchestrator's logic without a cluster: the same class, an in-process backend, and a
real SQLite database. Failure behaviour on real Ray is covered by test_failures.py."""

from __future__ import annotations

import asyncio

import pytest

from actors.config import PoolConfig
from actors.errors import QueueFull
from storage.messages import AttemptOutcome, TaskRequest, TaskStatus
from tests.support.inprocess_platform import inprocess_orchestrator, restarted, vanish


@pytest.fixture
async def orchestrator(tmp_path):
    async with inprocess_orchestrator(
            tmp_path, pools={"sleeper": PoolConfig(replicas=2, concurrency=2)}) as running:
        yield running


async def test_many_tasks_run_once_each(orchestrator):
    ids = await orchestrator.submit_many(
        [TaskRequest(f"{i}", {"echo": i}, "sleeper") for i in range(50)])
    tasks = await orchestrator.wait_many(ids, 30)
    assert [t.result["echo"] for t in tasks] == list(range(50))
    for task_id in ids[:5]:
        assert [a.outcome for a in await orchestrator.attempts(task_id)] == [
            AttemptOutcome.SUCCEEDED]


async def test_lost_replica_costs_an_attempt_and_is_replaced(orchestrator):
    task_id = await orchestrator.submit(TaskRequest("slow", {"seconds": 1}, "sleeper"))
    while (await orchestrator.get(task_id)).status is not TaskStatus.RUNNING:
        await asyncio.sleep(0.01)
    replica = orchestrator.lifecycle.live[task_id].replica
    backend = orchestrator.test_backend
    backend.kill(backend.actors[replica])
    task = await orchestrator.wait(task_id, 30)
    assert task.status is TaskStatus.SUCCEEDED
    attempts = await orchestrator.attempts(task_id)
    assert [a.outcome for a in attempts] == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    pool = orchestrator.pools.pools["sleeper"]
    assert pool.restarts == 1 and replica not in pool.replicas


async def test_restart_reconciles_running_tasks_from_storage(orchestrator):
    task_id = await orchestrator.submit(TaskRequest("slow", {"seconds": 0.5}, "sleeper"))
    while (await orchestrator.get(task_id)).status is not TaskStatus.RUNNING:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # let the running write commit
    reborn = await restarted(orchestrator)  # the old incarnation's process is gone
    task = await reborn.wait(task_id, 30)
    assert task.status is TaskStatus.SUCCEEDED and task.attempts == 2
    assert [a.outcome for a in await reborn.attempts(task_id)] == [
        AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    assert len(reborn.pools.pools["sleeper"].replicas) == 2  # re-attached, not doubled
    await reborn.drain(5)
    await vanish(reborn)


async def test_a_tenant_quota_bounds_its_waiting_tasks_only(tmp_path):
    def task(tenant: str) -> TaskRequest:
        return TaskRequest("sleep", {"seconds": 0}, "sleeper", tenant=tenant)

    async with inprocess_orchestrator(tmp_path, pools={"sleeper": PoolConfig(replicas=0)},
                                      tenant_queue_max=3, queue_max=100) as orchestrator:
        acme = await orchestrator.submit_many([task("acme")] * 3)
        with pytest.raises(QueueFull, match="tenant 'acme' has 3 tasks waiting") as info:
            await orchestrator.submit(task("acme"))
        assert info.value.details["tenant_queue_max"] == 3 and info.value.retry_after_s > 0
        globex = await orchestrator.submit_many([task("globex")] * 3)  # its own quota
        with pytest.raises(QueueFull):
            await orchestrator.submit_many([task("globex"), task("other")])
        page = await orchestrator.list_tasks(limit=100)
        assert sorted(t.id for t in page.tasks) == sorted(acme + globex)  # nothing half-taken
        await orchestrator.scale("sleeper", 1)  # acme's tasks start: its quota frees up
        await orchestrator.wait_many(acme, 10)
        assert (await orchestrator.get(await orchestrator.submit(task("acme")))).tenant == "acme"


async def test_a_waited_task_comes_back_as_its_outcomes_commit_read_it(orchestrator,
                                                                       monkeypatch):
    """`accept` with a wait (`Client.run`) and `wait_many` hand back the finished tasks that
    their outcome's transaction read, equal to a fresh read, with no read of their own; a
    task that finished before anyone waited is read as before."""
    from storage.task_store import TaskStore

    reads: list[list[str]] = []
    original = TaskStore.get_tasks_with_usage

    async def counted(self, task_ids):
        reads.append(list(task_ids))
        return await original(self, task_ids)

    monkeypatch.setattr(TaskStore, "get_tasks_with_usage", counted)
    waited = await orchestrator.accept(TaskRequest("slow", {"seconds": 0.2, "echo": 1},
                                                   "sleeper"), 30)
    ids = await orchestrator.submit_many([TaskRequest(f"{i}", {"seconds": 0.2, "echo": i},
                                                      "sleeper") for i in range(3)])
    together = await orchestrator.wait_many(ids, 30)
    assert reads == []
    assert waited.status is TaskStatus.SUCCEEDED and waited.result["echo"] == 1
    assert [t.result["echo"] for t in together] == [0, 1, 2]
    assert waited == await orchestrator.get(waited.id)  # the read falls back: not live now
    assert together == await orchestrator.wait_many(ids, 30)
    assert reads == [[waited.id], ids]
