"""`TaskStore.agent_stats`: per agent type outcomes, retries and attempt durations over a window,
on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import storage.task_store as task_store_module
from storage.messages import AttemptOutcome, TaskStatus, new_task_id
from storage.task_store import TaskStore, WriteBatch, percentile

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
SINCE = T0 - timedelta(hours=1)
BEFORE = SINCE - timedelta(minutes=5)


def finished_task(agent_type: str, status: TaskStatus, *, at: datetime = T0,
                  attempts: int = 1) -> dict[str, Any]:
    return {
        "id": new_task_id(), "tenant": "default", "description": "a task", "payload": {},
        "agent_type": agent_type, "status": status.value, "priority": 0,
        "attempts": attempts, "max_attempts": 3, "timeout_s": 30.0,
        "created_at": at - timedelta(minutes=1), "updated_at": at,
        "finished_at": None if status in (TaskStatus.QUEUED, TaskStatus.RUNNING) else at,
    }


def attempt(task: dict[str, Any], number: int, outcome: AttemptOutcome, *,
            started_at: datetime = T0, duration_s: float | None = None,
            elapsed_s: float | None = None) -> dict[str, Any]:
    """An attempt row; `elapsed_s` sets finished_at without a measured duration."""
    finished_at = None
    if outcome is not AttemptOutcome.RUNNING:
        finished_at = started_at + timedelta(seconds=elapsed_s if elapsed_s is not None
                                             else duration_s or 0.0)
    return {"task_id": task["id"], "number": number, "replica": f"agent:{task['agent_type']}:0",
            "outcome": outcome.value, "started_at": started_at, "finished_at": finished_at,
            "duration_s": duration_s}


async def store_rows(store: TaskStore, tasks: list[dict[str, Any]],
                     attempts: list[dict[str, Any]]) -> None:
    await store.apply(WriteBatch(new_tasks=tasks, new_attempts=attempts))


async def test_outcomes_and_success_rate_per_agent_type(store: TaskStore) -> None:
    calc_ok = [finished_task("calculator", TaskStatus.SUCCEEDED) for _ in range(3)]
    calc_failed = finished_task("calculator", TaskStatus.FAILED)
    proc_dead = finished_task("data_processor", TaskStatus.DEAD, attempts=3)
    proc_cancelled = finished_task("data_processor", TaskStatus.CANCELLED)
    proc_queued = finished_task("data_processor", TaskStatus.QUEUED, attempts=0)
    await store_rows(
        store,
        [*calc_ok, calc_failed, proc_dead, proc_cancelled, proc_queued],
        [*(attempt(t, 1, AttemptOutcome.SUCCEEDED, duration_s=0.5) for t in calc_ok),
         attempt(calc_failed, 1, AttemptOutcome.FAILED, duration_s=0.1),
         attempt(proc_dead, 1, AttemptOutcome.ERROR, duration_s=1.0),
         attempt(proc_dead, 2, AttemptOutcome.TIMEOUT, elapsed_s=30.0),
         attempt(proc_dead, 3, AttemptOutcome.LOST, elapsed_s=600.0),
         attempt(proc_cancelled, 1, AttemptOutcome.CANCELLED, duration_s=2.0)],
    )

    stats = await store.agent_stats(SINCE)

    assert set(stats) == {"calculator", "data_processor"}
    calculator = stats["calculator"]
    assert {k: calculator[k] for k in ("succeeded", "failed", "dead", "cancelled", "finished",
                                       "attempts", "retried", "lost", "timeouts")} == {
        "succeeded": 3, "failed": 1, "dead": 0, "cancelled": 0, "finished": 4,
        "attempts": 4, "retried": 0, "lost": 0, "timeouts": 0}
    assert calculator["success_rate"] == pytest.approx(0.75)
    processor = stats["data_processor"]
    assert {k: processor[k] for k in ("succeeded", "failed", "dead", "cancelled", "finished",
                                      "attempts", "retried", "lost", "timeouts")} == {
        "succeeded": 0, "failed": 0, "dead": 1, "cancelled": 1, "finished": 2,
        "attempts": 4, "retried": 3, "lost": 1, "timeouts": 1}
    assert processor["success_rate"] == 0.0


async def test_durations_use_the_measured_time_else_the_wall_time_and_skip_lost(
    store: TaskStore,
) -> None:
    task = finished_task("calculator", TaskStatus.DEAD, attempts=4)
    running = finished_task("calculator", TaskStatus.RUNNING)
    await store_rows(store, [task, running], [
        attempt(task, 1, AttemptOutcome.ERROR, duration_s=1.0, elapsed_s=1.2),
        attempt(task, 2, AttemptOutcome.TIMEOUT, elapsed_s=31.0),  # cut off: no measured time
        attempt(task, 3, AttemptOutcome.SUCCEEDED, duration_s=2.0),
        attempt(task, 4, AttemptOutcome.LOST, elapsed_s=3600.0),  # noticed late: not timed
        attempt(running, 1, AttemptOutcome.RUNNING),
    ])

    stats = (await store.agent_stats(SINCE))["calculator"]

    assert (stats["attempts"], stats["timed"], stats["durations_capped"]) == (5, 3, False)
    assert stats["duration_mean_s"] == pytest.approx((1.0 + 31.0 + 2.0) / 3)
    assert stats["duration_p95_s"] == pytest.approx(31.0)


async def test_cpu_seconds_sum_the_attempts_started_in_the_window(store: TaskStore) -> None:
    calc = finished_task("calculator", TaskStatus.DEAD, attempts=3)
    proc = finished_task("data_processor", TaskStatus.SUCCEEDED)
    unmeasured = finished_task("translator", TaskStatus.SUCCEEDED)
    await store_rows(store, [calc, proc, unmeasured], [
        {**attempt(calc, 1, AttemptOutcome.ERROR, started_at=BEFORE, duration_s=1.0),
         "cpu_s": 100.0},
        {**attempt(calc, 2, AttemptOutcome.ERROR, duration_s=1.0), "cpu_s": 0.5},
        {**attempt(calc, 3, AttemptOutcome.FAILED, duration_s=1.0), "cpu_s": 0.25},
        {**attempt(proc, 1, AttemptOutcome.SUCCEEDED, duration_s=1.0), "cpu_s": 2.0},
        attempt(unmeasured, 1, AttemptOutcome.SUCCEEDED, duration_s=1.0),
    ])

    stats = await store.agent_stats(SINCE)

    assert stats["calculator"]["cpu_s"] == pytest.approx(0.75)
    assert stats["data_processor"]["cpu_s"] == pytest.approx(2.0)
    assert stats["translator"]["cpu_s"] == 0.0


async def test_p95_over_many_attempts(store: TaskStore) -> None:
    tasks = [finished_task("calculator", TaskStatus.SUCCEEDED) for _ in range(100)]
    await store_rows(store, tasks, [
        attempt(t, 1, AttemptOutcome.SUCCEEDED, duration_s=float(i + 1),
                started_at=T0 - timedelta(seconds=i))
        for i, t in enumerate(tasks)])

    stats = (await store.agent_stats(SINCE))["calculator"]

    assert stats["timed"] == 100
    assert stats["duration_mean_s"] == pytest.approx(50.5)
    assert stats["duration_p95_s"] == pytest.approx(95.0)


async def test_only_what_happened_in_the_window_counts(store: TaskStore) -> None:
    old = finished_task("calculator", TaskStatus.FAILED, at=BEFORE)
    recent = finished_task("calculator", TaskStatus.SUCCEEDED)
    # Finished inside the window, after an attempt that started before it.
    straddling = finished_task("calculator", TaskStatus.SUCCEEDED, attempts=2)
    only_old = finished_task("translator", TaskStatus.SUCCEEDED, at=BEFORE)
    await store_rows(store, [old, recent, straddling, only_old], [
        attempt(old, 1, AttemptOutcome.FAILED, started_at=BEFORE, duration_s=9.0),
        attempt(recent, 1, AttemptOutcome.SUCCEEDED, duration_s=1.0),
        attempt(straddling, 1, AttemptOutcome.ERROR, started_at=BEFORE, duration_s=9.0),
        attempt(straddling, 2, AttemptOutcome.SUCCEEDED, duration_s=3.0),
        attempt(only_old, 1, AttemptOutcome.SUCCEEDED, started_at=BEFORE, duration_s=9.0),
    ])

    stats = await store.agent_stats(SINCE)

    assert set(stats) == {"calculator"}
    calculator = stats["calculator"]
    assert (calculator["finished"], calculator["succeeded"], calculator["failed"]) == (2, 2, 0)
    assert (calculator["attempts"], calculator["retried"], calculator["timed"]) == (2, 0, 2)
    assert calculator["duration_mean_s"] == pytest.approx(2.0)
    assert await store.agent_stats(T0 + timedelta(seconds=1)) == {}


async def test_since_in_another_offset_is_the_same_instant(store: TaskStore) -> None:
    task = finished_task("calculator", TaskStatus.SUCCEEDED)
    await store_rows(store, [task], [attempt(task, 1, AttemptOutcome.SUCCEEDED, duration_s=1.0)])
    plus_two = timezone(timedelta(hours=2))

    just_before = await store.agent_stats((T0 - timedelta(seconds=1)).astimezone(plus_two))
    just_after = await store.agent_stats((T0 + timedelta(seconds=1)).astimezone(plus_two))

    assert just_before["calculator"]["finished"] == 1
    assert just_after == {}


async def test_attempts_without_finished_tasks_have_no_success_rate(store: TaskStore) -> None:
    running = finished_task("calculator", TaskStatus.RUNNING, attempts=2)
    await store_rows(store, [running], [
        attempt(running, 1, AttemptOutcome.LOST, elapsed_s=5.0),
        attempt(running, 2, AttemptOutcome.RUNNING)])

    stats = (await store.agent_stats(SINCE))["calculator"]

    assert (stats["finished"], stats["success_rate"]) == (0, None)
    assert (stats["attempts"], stats["retried"], stats["lost"]) == (2, 1, 1)
    assert (stats["timed"], stats["duration_mean_s"], stats["duration_p95_s"]) == (0, None, None)


async def test_durations_come_from_the_most_recent_attempts_when_capped(
    store: TaskStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(task_store_module, "MAX_DURATION_ROWS", 3)
    tasks = [finished_task("calculator", TaskStatus.SUCCEEDED) for _ in range(5)]
    # The newest attempt took 1 s, the oldest 5 s.
    await store_rows(store, tasks, [
        attempt(t, 1, AttemptOutcome.SUCCEEDED, duration_s=float(i + 1),
                started_at=T0 - timedelta(seconds=i))
        for i, t in enumerate(tasks)])

    stats = (await store.agent_stats(SINCE))["calculator"]

    assert (stats["attempts"], stats["finished"]) == (5, 5)  # counts are never capped
    assert (stats["timed"], stats["durations_capped"]) == (3, True)
    assert stats["duration_mean_s"] == pytest.approx(2.0)


async def test_an_empty_store_has_no_stats(store: TaskStore) -> None:
    assert await store.agent_stats(SINCE) == {}


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 95) is None
    assert percentile([4.0], 95) == 4.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 21)], 95) == 19.0
    assert percentile([float(i) for i in range(1, 21)], 100) == 20.0
