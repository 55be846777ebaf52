"""The orchestrator's group commit (`actors.store_writer.StoreWriter`) on SQLite and PostgreSQL:
writes staged together commit in one transaction, in order; a lingering write (a task's
"started" records) rides along with the next write that flushes, or commits on its own once its
linger is over, so nothing staged is left behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from actors.store_writer import StoreWriter
from storage.messages import TaskStatus, utcnow
from storage.task_store import TaskStore, WriteBatch
from tests.storage.test_task_store import attempt_row, event_row, task_row


@pytest.fixture
async def writer(store: TaskStore) -> AsyncIterator[StoreWriter]:
    committed: list[str] = []
    writer = StoreWriter(store, max_batch=1000, on_commit=lambda events: committed.extend(
        e.kind for e in events))
    writer.committed = committed  # type: ignore[attr-defined]
    writer.start()
    yield writer
    await writer.stop()


async def _submitted(writer: StoreWriter) -> str:
    row = task_row()
    await writer.write(WriteBatch(new_tasks=[row], events=[event_row(row["id"], "queued")]))
    return str(row["id"])


def _started(task_id: str) -> WriteBatch:
    now = utcnow()
    return WriteBatch(new_attempts=[attempt_row(task_id, 1, started_at=now)],
                      task_updates=[{"id": task_id, "status": TaskStatus.RUNNING.value,
                                     "attempts": 1, "updated_at": now}],
                      events=[event_row(task_id, "started", at=now, attempt=1)])


def _succeeded(task_id: str) -> WriteBatch:
    now = utcnow()
    return WriteBatch(
        attempt_updates=[{"task_id": task_id, "number": 1, "outcome": "succeeded",
                          "finished_at": now}],
        task_updates=[{"id": task_id, "fence_attempt": 1, "status": TaskStatus.SUCCEEDED.value,
                       "result": {"answer": 42}, "finished_at": now, "updated_at": now}],
        events=[event_row(task_id, "succeeded", at=now, attempt=1)])


async def test_a_lingering_write_commits_with_the_next_write_in_one_transaction(
        writer: StoreWriter, store: TaskStore) -> None:
    task_id = await _submitted(writer)
    flushes = writer.flushes
    started = writer.stage(_started(task_id), linger_s=30.0)
    await asyncio.sleep(0.05)
    assert not started.done()  # lingering: no flush of its own yet
    await writer.write(_succeeded(task_id))
    assert started.done() and started.exception() is None
    assert writer.flushes == flushes + 1
    task = await store.get_task(task_id)
    assert task.status is TaskStatus.SUCCEEDED and task.attempts == 1  # the fence held: in order
    assert writer.committed[-2:] == ["started", "succeeded"]  # type: ignore[attr-defined]


async def test_a_lingering_write_alone_commits_once_its_linger_is_over(
        writer: StoreWriter, store: TaskStore) -> None:
    task_id = await _submitted(writer)
    began = time.monotonic()
    await asyncio.wait_for(writer.stage(_started(task_id), linger_s=0.2), 10)
    assert time.monotonic() - began >= 0.2
    task = await store.get_task(task_id)
    assert task.status is TaskStatus.RUNNING and task.attempts == 1


async def test_writes_without_linger_flush_at_once(writer: StoreWriter, store: TaskStore) -> None:
    task_id = await _submitted(writer)
    await asyncio.wait_for(writer.stage(_started(task_id)), 10)
    assert (await store.get_task(task_id)).status is TaskStatus.RUNNING
