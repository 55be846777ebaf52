"""What the orchestrator and the readers rely on from `TaskStore`, on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.exc import SQLAlchemyError

from storage.errors import InvalidRequest, NotFound, StorageError
from storage.messages import (
    Attempt,
    AttemptOutcome,
    Task,
    TaskError,
    TaskStatus,
    new_task_id,
)
from storage.task_store import MAX_PAGE, TaskPage, TaskStore, WriteBatch

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


def task_row(task_id: str | None = None, *, at: datetime = T0, **columns: Any) -> dict[str, Any]:
    """A `new_tasks` row as the orchestrator writes it: queued, never attempted."""
    row = {
        "id": task_id or new_task_id(),
        "tenant": "default",
        "description": "summarise the quarterly report",
        "payload": {},
        "agent_type": "summarizer",
        "status": TaskStatus.QUEUED.value,
        "priority": 0,
        "attempts": 0,
        "max_attempts": 3,
        "timeout_s": 30.0,
        "created_at": at,
        "updated_at": at,
    }
    return {**row, **columns}


def event_row(task_id: str, kind: str, *, at: datetime = T0, **columns: Any) -> dict[str, Any]:
    return {"task_id": task_id, "kind": kind, "at": at, **columns}


def attempt_row(task_id: str, number: int, **columns: Any) -> dict[str, Any]:
    row = {"task_id": task_id, "number": number, "replica": f"summarizer-{number}",
           "outcome": AttemptOutcome.RUNNING.value, "started_at": T0}
    return {**row, **columns}


async def submit(store: TaskStore, *rows: dict[str, Any]) -> list[str]:
    """Store queued tasks the way a submission does: each with its `queued` event."""
    await store.apply(WriteBatch(
        new_tasks=list(rows),
        events=[event_row(row["id"], "queued", at=row["created_at"]) for row in rows],
    ))
    return [row["id"] for row in rows]


async def test_a_submitted_task_reads_back_exactly(store: TaskStore) -> None:
    payload = {
        "text": "Grüße, 世界 — naïve café 🚀",
        "options": {"max_words": 120, "ratio": 0.25, "strict": True, "tags": ["a", "ü", None]},
        "empty": {},
    }
    route = {"agent_type": "summarizer", "confidence": 0.93, "candidates": [["summarizer", 0.93]],
             "reason": "router"}
    row = task_row(payload=payload, route=route, priority=5, tenant="acme",
                   idempotency_key="report-2026-q3", batch_id="batch-7",
                   updated_at=T0 + timedelta(seconds=1, microseconds=250))
    await store.apply(WriteBatch(
        new_tasks=[row], events=[event_row(row["id"], "queued", data={"route": route})]
    ))

    task = await store.get_task(row["id"])

    assert task == Task(
        id=row["id"], description="summarise the quarterly report", payload=payload,
        status=TaskStatus.QUEUED, agent_type="summarizer", tenant="acme", priority=5, attempts=0,
        max_attempts=3, timeout_s=30.0, created_at=T0,
        updated_at=T0 + timedelta(seconds=1, microseconds=250),
        idempotency_key="report-2026-q3", batch_id="batch-7", route=route,
        result=None, error=None, finished_at=None,
    )
    assert task.created_at.utcoffset() == timedelta(0)
    [queued] = await store.events(row["id"])
    assert (queued.kind, queued.at, queued.attempt, queued.data) == ("queued", T0, None,
                                                                      {"route": route})


async def test_times_with_another_offset_come_back_as_the_same_instant_in_utc(
    store: TaskStore,
) -> None:
    at = datetime(2026, 11, 21, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    [task_id] = await submit(store, task_row(at=at))

    task = await store.get_task(task_id)

    assert task.created_at == at
    assert task.created_at.utcoffset() == timedelta(0)


async def test_rows_of_one_kind_with_different_columns_keep_all_of_them(store: TaskStore) -> None:
    plain = task_row()
    keyed = task_row(idempotency_key="k-1", batch_id="b-1", route={"agent_type": "summarizer"})
    await store.apply(WriteBatch(
        new_tasks=[plain, keyed],
        events=[event_row(plain["id"], "queued"),
                event_row(keyed["id"], "queued", attempt=0, data={"why": "test"})],
    ))

    stored = await store.get_task(keyed["id"])
    [event] = await store.events(keyed["id"])

    assert (stored.idempotency_key, stored.batch_id, stored.route) == (
        "k-1", "b-1", {"agent_type": "summarizer"})
    assert (event.attempt, event.data) == (0, {"why": "test"})


def _duplicate_task(existing_id: str) -> WriteBatch:
    return WriteBatch(new_tasks=[task_row(existing_id)])


def _duplicate_attempt(existing_id: str) -> WriteBatch:
    return WriteBatch(new_attempts=[attempt_row(existing_id, 1)])


def _attempt_of_unknown_task(_existing_id: str) -> WriteBatch:
    return WriteBatch(new_attempts=[attempt_row(new_task_id(), 1)])


@pytest.mark.parametrize(
    "invalid", [_duplicate_task, _duplicate_attempt, _attempt_of_unknown_task],
    ids=["duplicate-task-id", "duplicate-attempt", "attempt-of-unknown-task"],
)
async def test_a_batch_with_one_invalid_row_stores_nothing(store: TaskStore, invalid) -> None:
    existing = task_row(status=TaskStatus.RUNNING.value, attempts=1)
    await store.apply(
        WriteBatch(new_tasks=[existing], new_attempts=[attempt_row(existing["id"], 1)])
    )
    fresh = task_row()
    batch = WriteBatch(
        new_tasks=[fresh],
        task_updates=[{"id": existing["id"], "status": TaskStatus.SUCCEEDED.value}],
        events=[event_row(fresh["id"], "queued"), event_row(existing["id"], "succeeded")],
    )
    batch.extend(invalid(existing["id"]))

    with pytest.raises(StorageError) as raised:
        await store.apply(batch)

    assert isinstance(raised.value.__cause__, SQLAlchemyError)
    with pytest.raises(NotFound):
        await store.get_task(fresh["id"])
    assert (await store.get_task(existing["id"])).status is TaskStatus.RUNNING
    assert await store.events(fresh["id"]) == []
    assert await store.events(existing["id"]) == []
    assert [a.number for a in await store.attempts(existing["id"])] == [1]


async def test_an_idempotency_key_is_unique_within_its_tenant(store: TaskStore) -> None:
    [first] = await submit(store, task_row(tenant="acme", idempotency_key="order-42"))

    with pytest.raises(StorageError):
        await submit(store, task_row(tenant="acme", idempotency_key="order-42"))
    [other_tenant] = await submit(store, task_row(tenant="globex", idempotency_key="order-42"))
    await submit(store, task_row(tenant="acme"), task_row(tenant="acme"))  # no key: no limit

    found = await store.task_ids_by_idempotency_keys(
        [("acme", "order-42"), ("acme", "order-43"), ("globex", "order-42"), ("initech", "x")])
    assert found == {("acme", "order-42"): first, ("globex", "order-42"): other_tenant}
    assert await store.task_ids_by_idempotency_keys([]) == {}
    many = [("acme", f"k{i}") for i in range(1200)] + [("acme", "order-42")]  # several queries
    assert await store.task_ids_by_idempotency_keys(many) == {("acme", "order-42"): first}


async def test_a_duplicate_idempotency_key_within_one_batch_stores_neither(
    store: TaskStore,
) -> None:
    rows = [task_row(idempotency_key="twice"), task_row(idempotency_key="twice")]

    with pytest.raises(StorageError):
        await submit(store, *rows)

    assert await store.get_tasks([row["id"] for row in rows]) == {}


async def test_a_fenced_update_applies_only_to_the_current_attempt(store: TaskStore) -> None:
    [task_id] = await submit(store, task_row(status=TaskStatus.RUNNING.value, attempts=2))
    before = await store.get_task(task_id)
    finished = {"status": TaskStatus.SUCCEEDED.value, "result": {"summary": "late"},
                "finished_at": T0 + timedelta(minutes=1)}

    await store.apply(WriteBatch(task_updates=[{"id": task_id, "fence_attempt": 1, **finished}]))
    assert await store.get_task(task_id) == before

    await store.apply(WriteBatch(task_updates=[
        {"id": task_id, "fence_attempt": 2, **finished, "result": {"summary": "current"}}
    ]))
    after = await store.get_task(task_id)
    assert (after.status, after.result, after.finished_at) == (
        TaskStatus.SUCCEEDED, {"summary": "current"}, T0 + timedelta(minutes=1))


async def test_a_fenced_update_sees_the_earlier_updates_of_its_batch(store: TaskStore) -> None:
    [task_id] = await submit(store, task_row())

    await store.apply(WriteBatch(task_updates=[
        {"id": task_id, "status": TaskStatus.RUNNING.value, "attempts": 1},
        {"id": task_id, "fence_attempt": 1, "status": TaskStatus.SUCCEEDED.value, "result": 7},
    ]))

    task = await store.get_task(task_id)
    assert (task.status, task.attempts, task.result) == (TaskStatus.SUCCEEDED, 1, 7)


@pytest.mark.parametrize("same_columns", [True, False], ids=["same-columns", "other-columns"])
async def test_updates_apply_in_the_order_they_were_added(
    store: TaskStore, same_columns: bool
) -> None:
    [task_id] = await submit(store, task_row())
    running = {"id": task_id, "status": TaskStatus.RUNNING.value, "attempts": 1}
    succeeded = {"id": task_id, "status": TaskStatus.SUCCEEDED.value, "attempts": 1}
    if not same_columns:
        succeeded["finished_at"] = T0 + timedelta(seconds=5)

    await store.apply(WriteBatch(task_updates=[running, succeeded]))

    assert (await store.get_task(task_id)).status is TaskStatus.SUCCEEDED


async def test_a_task_costs_nothing_until_its_totals_are_written(store: TaskStore) -> None:
    [task_id] = await submit(store, task_row(status=TaskStatus.RUNNING.value, attempts=2))
    fresh = await store.get_task(task_id)
    assert (fresh.cpu_s, fresh.wall_s) == (0.0, 0.0)
    assert (fresh.to_json()["cpu_s"], fresh.to_json()["wall_s"]) == (0.0, 0.0)

    await store.apply(WriteBatch(task_updates=[
        {"id": task_id, "fence_attempt": 2, "cpu_s": 1.25, "wall_s": 3.5},
        {"id": task_id, "fence_attempt": 1, "cpu_s": 99.0, "wall_s": 99.0},
    ]))

    task = await store.get_task(task_id)
    assert (task.cpu_s, task.wall_s) == (1.25, 3.5)
    assert (task.to_json()["cpu_s"], task.to_json()["wall_s"]) == (1.25, 3.5)
    [listed] = (await store.list_tasks()).tasks
    assert (listed.cpu_s, listed.wall_s) == (1.25, 3.5)


async def test_an_unreachable_server_is_a_storage_error_not_a_socket_error() -> None:
    import socket

    from storage.database import create_engine, ensure_schema_current

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    store = TaskStore(create_engine(f"postgresql://postgres@127.0.0.1:{closed_port}/ymera"))
    try:
        with pytest.raises(StorageError, match="ConnectionRefusedError"):
            await store.get_task("t1")
        with pytest.raises(StorageError, match="ConnectionRefusedError"):
            await store.apply(WriteBatch(new_tasks=[task_row()]))
        with pytest.raises(StorageError, match="cannot reach the database"):
            await ensure_schema_current(store.engine)
    finally:
        await store.close()


async def test_a_task_history_read_checks_the_task_and_its_tenant(store: TaskStore) -> None:
    [task_id] = await submit(store, task_row(tenant="acme"))
    await store.apply(WriteBatch(new_attempts=[attempt_row(task_id, 1)], events=[
        event_row(task_id, "started", attempt=1)]))
    assert [a.number for a in await store.task_attempts(task_id, "acme")] == [1]
    assert [a.number for a in await store.task_attempts(task_id)] == [1]
    assert [e.kind for e in await store.task_events(task_id, 0, "acme")] == ["queued", "started"]
    [never_run] = await submit(store, task_row(tenant="acme"))
    assert await store.task_attempts(never_run, "acme") == []
    for missing, tenant in ((task_id, "globex"), ("no-such-task", "acme"),
                            ("no-such-task", None)):
        with pytest.raises(NotFound) as caught:
            await store.task_attempts(missing, tenant)
        assert caught.value.details == {"task_id": missing}
        with pytest.raises(NotFound):
            await store.task_events(missing, 0, tenant)


async def test_attempts_and_events_come_back_in_order(store: TaskStore) -> None:
    [task_id] = await submit(store, task_row())
    [other_id] = await submit(store, task_row())
    timeout = TaskError(code="timeout", message="no answer in 30 s", retryable=True,
                        error_type="TimeoutError")
    await store.apply(WriteBatch(
        new_attempts=[attempt_row(task_id, 1)],
        task_updates=[{"id": task_id, "status": TaskStatus.RUNNING.value, "attempts": 1}],
        events=[event_row(task_id, "started", attempt=1, at=T0 + timedelta(seconds=1))],
    ))
    await store.apply(WriteBatch(
        new_attempts=[attempt_row(task_id, 2, started_at=T0 + timedelta(seconds=40))],
        task_updates=[{"id": task_id, "attempts": 2}],
        attempt_updates=[{"task_id": task_id, "number": 1, "outcome": AttemptOutcome.TIMEOUT.value,
                          "finished_at": T0 + timedelta(seconds=31), "duration_s": 30.0,
                          "cpu_s": 0.75, "error": timeout.to_json()}],
        events=[
            event_row(task_id, "attempt_failed", attempt=1, at=T0 + timedelta(seconds=31),
                      data={"error": timeout.to_json()}),
            event_row(task_id, "started", attempt=2, at=T0 + timedelta(seconds=40)),
        ],
    ))

    assert await store.attempts(task_id) == [
        Attempt(task_id=task_id, number=1, replica="summarizer-1", started_at=T0,
                outcome=AttemptOutcome.TIMEOUT, finished_at=T0 + timedelta(seconds=31),
                error=timeout, duration_s=30.0, cpu_s=0.75),
        Attempt(task_id=task_id, number=2, replica="summarizer-2",
                started_at=T0 + timedelta(seconds=40)),
    ]
    events = await store.events(task_id)
    assert [(e.kind, e.attempt) for e in events] == [
        ("queued", None), ("started", 1), ("attempt_failed", 1), ("started", 2)]
    assert all(e.task_id == task_id for e in events)
    assert events[2].data == {"error": timeout.to_json()}
    assert events[2].at == T0 + timedelta(seconds=31)
    assert [e.id for e in events] == sorted({e.id for e in events})
    assert await store.events(task_id, after_id=events[1].id) == events[2:]
    assert await store.events(task_id, after_id=events[-1].id) == []
    assert [e.kind for e in await store.events(other_id)] == ["queued"]
    assert await store.attempts(other_id) == []


async def test_list_tasks_filters(store: TaskStore) -> None:
    rows = {
        "queued_summary": task_row(),
        "running_summary": task_row(status=TaskStatus.RUNNING.value, attempts=1),
        "queued_translation": task_row(agent_type="translator", batch_id="nightly"),
        "other_tenant": task_row(tenant="globex", batch_id="nightly"),
    }
    await submit(store, *rows.values())

    async def listed(**filters: Any) -> set[str]:
        page = await store.list_tasks(**filters)
        assert page.next_cursor is None
        return {name for name, row in rows.items() if row["id"] in {t.id for t in page.tasks}}

    assert await listed() == set(rows)
    assert await listed(status=TaskStatus.RUNNING) == {"running_summary"}
    assert await listed(agent_type="translator") == {"queued_translation"}
    assert await listed(tenant="globex") == {"other_tenant"}
    assert await listed(batch_id="nightly") == {"queued_translation", "other_tenant"}
    assert await listed(status=TaskStatus.QUEUED, tenant="default", agent_type="summarizer") == {
        "queued_summary"}
    assert await listed(status=TaskStatus.DEAD) == set()


async def test_list_tasks_pages_through_every_task_once_newest_first(store: TaskStore) -> None:
    # Three tasks share each creation time, so the cursor must break ties by id.
    rows = [task_row(at=T0 + timedelta(seconds=i // 3)) for i in range(25)]
    await submit(store, *rows)
    expected = [row["id"] for row in sorted(rows, key=lambda r: (r["created_at"], r["id"]),
                                            reverse=True)]

    pages, cursor = [], None
    while True:
        page = await store.list_tasks(limit=10, cursor=cursor)
        pages.append([task.id for task in page.tasks])
        cursor = page.next_cursor
        if cursor is None:
            break

    assert [len(ids) for ids in pages] == [10, 10, 5]
    assert [task_id for ids in pages for task_id in ids] == expected


async def test_list_tasks_rejects_a_cursor_it_did_not_issue(store: TaskStore) -> None:
    def encoded(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode()

    for cursor in ("garbage", "!!!", encoded('{"created": 1}'), encoded('["yesterday", "x"]'),
                   encoded("[1, 2, 3]")):
        with pytest.raises(InvalidRequest):
            await store.list_tasks(cursor=cursor)


async def test_list_tasks_rejects_a_limit_out_of_range(store: TaskStore) -> None:
    for limit in (0, -1, MAX_PAGE + 1, 5000):
        with pytest.raises(InvalidRequest):
            await store.list_tasks(limit=limit)
    assert (await store.list_tasks(limit=MAX_PAGE)).tasks == []


async def test_unfinished_tasks_are_the_queued_and_running_ones_oldest_first(
    store: TaskStore,
) -> None:
    statuses = [TaskStatus.RUNNING, TaskStatus.SUCCEEDED, TaskStatus.QUEUED, TaskStatus.DEAD,
                TaskStatus.FAILED, TaskStatus.QUEUED, TaskStatus.CANCELLED, TaskStatus.RUNNING]
    # Created newest first, so "oldest first" is not insertion order.
    rows = [task_row(status=status.value, at=T0 - timedelta(minutes=i))
            for i, status in enumerate(statuses)]
    await submit(store, *rows)

    unfinished = await store.unfinished_tasks()

    assert [task.id for task in unfinished] == [
        row["id"] for row in reversed(rows)
        if row["status"] in (TaskStatus.QUEUED.value, TaskStatus.RUNNING.value)
    ]
    assert await store.count_by_status() == {
        "queued": 2, "running": 2, "succeeded": 1, "failed": 1, "dead": 1, "cancelled": 1}


async def test_counts_by_status_of_one_tenant_leave_the_others_out(store: TaskStore) -> None:
    await submit(store, task_row(tenant="acme", status=TaskStatus.DEAD.value),
                 task_row(tenant="globex", status=TaskStatus.DEAD.value),
                 task_row(tenant="globex", status=TaskStatus.DEAD.value),
                 task_row(tenant="globex"))

    assert await store.count_by_status("acme") == {"dead": 1}
    assert await store.count_by_status("initech") == {}
    assert await store.count_by_status() == {"dead": 3, "queued": 1}


async def test_an_empty_store_has_nothing(store: TaskStore) -> None:
    assert await store.unfinished_tasks() == []
    assert await store.count_by_status() == {}
    assert await store.list_tasks() == TaskPage([], None)
    await store.apply(WriteBatch())  # an empty batch is a no-op


async def test_an_unknown_task_is_not_found(store: TaskStore) -> None:
    [known] = await submit(store, task_row())
    unknown = new_task_id()

    with pytest.raises(NotFound) as raised:
        await store.get_task(unknown)

    assert raised.value.details == {"task_id": unknown}
    assert set(await store.get_tasks([known, unknown])) == {known}
    assert await store.get_tasks([]) == {}
