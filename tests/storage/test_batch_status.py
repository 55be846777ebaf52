"""`TaskStore.batch_status`: how a batch's tasks stand, per tenant, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage.errors import NotFound
from storage.messages import TaskStatus, new_task_id
from storage.task_store import TaskStore, WriteBatch
from tests.storage.test_task_store import T0, task_row


async def add(store: TaskStore, *rows) -> None:
    await store.apply(WriteBatch(new_tasks=list(rows)))


async def test_counts_every_status_of_one_batch_and_its_time_span(store: TaskStore):
    finished = T0 + timedelta(minutes=5)
    await add(
        store,
        *[task_row(batch_id="b1", at=T0 + timedelta(seconds=i)) for i in range(3)],
        task_row(batch_id="b1", status=TaskStatus.SUCCEEDED.value, finished_at=finished),
        task_row(batch_id="b1", status=TaskStatus.DEAD.value,
                 finished_at=finished - timedelta(minutes=1)),
        task_row(batch_id="b2", status=TaskStatus.SUCCEEDED.value, finished_at=finished),
        task_row(batch_id=None),
    )
    status = await store.batch_status("b1", "default")
    assert status.counts == {"queued": 3, "running": 0, "succeeded": 1, "failed": 0,
                             "dead": 1, "cancelled": 0}
    assert (status.total, status.finished) == (5, 2)
    assert status.first_created_at == T0 and status.last_finished_at == finished
    assert status.to_json()["unfinished"] == 3


async def test_another_tenants_batch_is_not_found(store: TaskStore):
    await add(store, task_row(new_task_id(), batch_id="shared-name", tenant="acme"))
    assert (await store.batch_status("shared-name", "acme")).total == 1
    with pytest.raises(NotFound, match="no batch 'shared-name'"):
        await store.batch_status("shared-name", "default")
    with pytest.raises(NotFound):
        await store.batch_status("never", "acme")
