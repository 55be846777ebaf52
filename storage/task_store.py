"""Durable task state: the one place that reads and writes tasks, attempts and events.

The orchestrator is the only writer of lifecycle state; it hands this store batches of writes
(`WriteBatch`) and each batch commits in one transaction, so a task row is either fully recorded
or not at all. Readers (client, CLI, API) use the query methods.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any, overload

from sqlalchemy import ColumnElement, and_, bindparam, func, insert, or_, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.cursor import decode_cursor, encode_cursor
from storage.database import EngineStore
from storage.errors import InvalidRequest, NotFound
from storage.messages import (
    as_utc,
    Attempt,
    AttemptOutcome,
    BatchStatus,
    Task,
    TaskError,
    TaskEvent,
    TaskStatus,
    utcnow,
)
from storage.llm_budget import usage_by_task, usage_of_tasks
from storage.models import attempts_table, events_table, tasks_table
from storage.webhook_outbox import DEFAULT_RETRY_PERIOD_S, write_deliveries
from storage.write_batch import WriteBatch

__all__ = ["TaskPage", "TaskStore", "WriteBatch", "task_from_row", "with_usage"]

MAX_PAGE = 1000
KEY_LOOKUP_CHUNK = 500  # (tenant, key) pairs per query: 1,000 bound parameters
MAX_DURATION_ROWS = 100_000
RETRIED_OUTCOMES = (AttemptOutcome.ERROR, AttemptOutcome.TIMEOUT, AttemptOutcome.LOST)


@dataclasses.dataclass(frozen=True)
class TaskPage:
    tasks: list[Task]
    next_cursor: str | None


@overload
def _aware(value: datetime) -> datetime: ...


@overload
def _aware(value: None) -> None: ...


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _in_utc(row: dict[str, Any]) -> dict[str, Any]:
    return {k: as_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def task_from_row(row: Any) -> Task:
    """The `Task` a tasks row (or a row about to be inserted) holds. A new row's cost, when it
    does not name it, is zero (the columns' default)."""
    return Task(
        id=row.id, description=row.description, payload=row.payload,
        status=TaskStatus(row.status), agent_type=row.agent_type, tenant=row.tenant,
        priority=row.priority, attempts=row.attempts, max_attempts=row.max_attempts,
        timeout_s=row.timeout_s, created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at), idempotency_key=row.idempotency_key,
        batch_id=row.batch_id, route=row.route, result=row.result,
        error=TaskError.from_json(row.error), finished_at=_aware(row.finished_at),
        cpu_s=getattr(row, "cpu_s", None) or 0.0, wall_s=getattr(row, "wall_s", None) or 0.0,
        callback_url=getattr(row, "callback_url", None),
    )


@functools.lru_cache(maxsize=64)
def _attempt_update(keys: tuple[str, ...]) -> Any:
    """UPDATE one attempt (by task id and number) setting `keys`, built once per key set."""
    return (update(attempts_table)
            .where(attempts_table.c.task_id == bindparam("b_task_id"))
            .where(attempts_table.c.number == bindparam("b_number"))
            .values({k: bindparam(k) for k in keys}))


def with_usage(task_rows: Sequence[Any], usage_rows: Sequence[Any]) -> dict[str, Task]:
    """Tasks by id from their rows, each given the model usage `usage_rows` (of
    `storage.llm_budget.usage_of_tasks`) records for it under its own tenant."""
    usage = usage_by_task(usage_rows)
    tasks = {}
    for row in task_rows:
        task = task_from_row(row)
        used = usage.get((task.tenant, task.id))
        if used is not None:
            task = dataclasses.replace(task, llm_usage={
                "input_tokens": used.input_tokens, "output_tokens": used.output_tokens,
                "cost_usd": used.cost, "calls": used.calls})
        tasks[task.id] = task
    return tasks


def _grouped_by_keys(rows: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive rows with the same keys, so each run is one executemany and order holds.

    An executemany takes its columns from its first row, so rows with other keys must not share
    it: a later row's extra columns would be dropped silently. Times are converted to UTC.
    """
    runs: list[list[dict[str, Any]]] = []
    for row in map(_in_utc, rows):
        if runs and runs[-1][0].keys() == row.keys():
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


class TaskStore(EngineStore):
    """Async access to the task tables over one engine. `webhook_retry_period_s` is how long
    the deliveries its batches cause are tried (`storage.webhook_outbox`)."""

    webhook_retry_period_s: float = DEFAULT_RETRY_PERIOD_S

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def apply(self, batch: WriteBatch, events: bool = False) -> list[TaskEvent]:
        """Commit every write in `batch` in one transaction, or none of them. With `events`,
        return the events written, with the ids storage gave them, in order (else [])."""
        if not len(batch):
            return []
        return await self._run_transaction(f"writing {len(batch)} records", self._apply,
                                           batch, events)

    def _apply(self, connection: Connection, batch: WriteBatch,
               want_events: bool) -> list[TaskEvent]:
        for run in _grouped_by_keys(batch.new_tasks):
            connection.execute(insert(tasks_table), run)
        for run in _grouped_by_keys(batch.new_attempts):
            connection.execute(insert(attempts_table), run)
        for run in _grouped_by_keys(batch.task_updates):
            rows = [{("b_" + k if k in ("id", "fence_attempt") else k): v for k, v in r.items()}
                    for r in run]
            connection.execute(self._task_update(tuple(run[0].keys())), rows)
        for run in _grouped_by_keys(batch.attempt_updates):
            keys = tuple(k for k in run[0] if k not in ("task_id", "number"))
            rows = [{**{k: r[k] for k in keys}, "b_task_id": r["task_id"], "b_number": r["number"]}
                    for r in run]
            connection.execute(_attempt_update(keys), rows)
        written: list[TaskEvent] = []
        for run in _grouped_by_keys(batch.events):
            if not want_events:
                connection.execute(insert(events_table), run)
                continue
            result = connection.execute(
                insert(events_table).returning(events_table.c.id, sort_by_parameter_order=True),
                run)
            written += [TaskEvent(id=row.id, task_id=r["task_id"], kind=r["kind"],
                                  at=_aware(r["at"]), attempt=r.get("attempt"), data=r.get("data"))
                        for row, r in zip(result.all(), run)]
        if batch.notifications:
            write_deliveries(connection, batch.notifications, utcnow(),
                             self.webhook_retry_period_s)
        if batch.read_back:
            ids = list(dict.fromkeys(batch.read_back))
            batch.found = with_usage(
                connection.execute(select(tasks_table).where(tasks_table.c.id.in_(ids))).all(),
                connection.execute(usage_of_tasks(ids)).all())
        return written

    @staticmethod
    @functools.lru_cache(maxsize=64)  # a handful of key sets; building costs more than running
    def _task_update(keys: tuple[str, ...]) -> Any:
        """UPDATE tasks by id; a `fence_attempt` key makes it apply only to that attempt."""
        columns = [k for k in keys if k not in ("id", "fence_attempt")]
        statement = (
            update(tasks_table)
            .where(tasks_table.c.id == bindparam("b_id"))
            .values({k: bindparam(k) for k in columns})
        )
        if "fence_attempt" in keys:
            statement = statement.where(tasks_table.c.attempts == bindparam("b_fence_attempt"))
        return statement.execution_options(synchronize_session=False)

    async def get_task(self, task_id: str) -> Task:
        rows = await self._fetch(select(tasks_table).where(tasks_table.c.id == task_id))
        if not rows:
            raise NotFound(f"no task with id {task_id!r}", {"task_id": task_id})
        return task_from_row(rows[0])

    async def get_tasks(self, task_ids: Sequence[str]) -> dict[str, Task]:
        if not task_ids:
            return {}
        rows = await self._fetch(select(tasks_table).where(tasks_table.c.id.in_(list(task_ids))))
        return {row.id: task_from_row(row) for row in rows}

    async def get_tasks_with_usage(self, task_ids: Sequence[str]) -> dict[str, Task]:
        """The tasks of `task_ids` that exist, by id, each with its model usage when it made
        model calls (`Task.llm_usage`, counted under the task's own tenant), in one read."""
        if not task_ids:
            return {}
        ids = list(task_ids)
        rows, usage_rows = await self._fetch_all(
            select(tasks_table).where(tasks_table.c.id.in_(ids)), usage_of_tasks(ids))
        return with_usage(rows, usage_rows)

    async def task_ids_by_idempotency_keys(self, keys: Collection[tuple[str, str]]
                                           ) -> dict[tuple[str, str], str]:
        """The ids of the tasks that these (tenant, idempotency key) pairs name, by pair."""
        pairs = list(keys)
        found: dict[tuple[str, str], str] = {}
        for start in range(0, len(pairs), KEY_LOOKUP_CHUNK):
            rows = await self._fetch(
                select(tasks_table.c.tenant, tasks_table.c.idempotency_key, tasks_table.c.id)
                .where(tuple_(tasks_table.c.tenant, tasks_table.c.idempotency_key)
                       .in_(pairs[start:start + KEY_LOOKUP_CHUNK])))
            found.update({(tenant, key): task_id for tenant, key, task_id in rows})
        return found

    async def list_tasks(
        self,
        *,
        status: TaskStatus | None = None,
        agent_type: str | None = None,
        tenant: str | None = None,
        batch_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        """Newest first, `limit` at a time; pass `next_cursor` back for the next page."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
        query = select(tasks_table)
        for column, value in (("status", status.value if status else None),
                              ("agent_type", agent_type), ("tenant", tenant),
                              ("batch_id", batch_id)):
            if value is not None:
                query = query.where(tasks_table.c[column] == value)
        if cursor:
            created, task_id = decode_cursor(cursor)
            query = query.where(or_(
                tasks_table.c.created_at < created,
                and_(tasks_table.c.created_at == created, tasks_table.c.id < task_id),
            ))
        query = query.order_by(tasks_table.c.created_at.desc(), tasks_table.c.id.desc())
        rows = await self._fetch(query.limit(limit + 1))
        tasks = [task_from_row(row) for row in rows[:limit]]
        next_cursor = (encode_cursor(tasks[-1].created_at, tasks[-1].id) if len(rows) > limit
                       else None)
        return TaskPage(tasks, next_cursor)

    async def unfinished_tasks(self) -> list[Task]:
        """Every queued or running task, oldest first: what reconciliation must pick up."""
        rows = await self._fetch(
            select(tasks_table)
            .where(tasks_table.c.status.in_([TaskStatus.QUEUED.value, TaskStatus.RUNNING.value]))
            .order_by(tasks_table.c.created_at, tasks_table.c.id)
        )
        return [task_from_row(row) for row in rows]

    async def attempts(self, task_id: str) -> list[Attempt]:
        rows = await self._fetch(_attempts_query(task_id))
        return [_attempt_from_row(row) for row in rows]

    async def events(self, task_id: str, after_id: int = 0) -> list[TaskEvent]:
        rows = await self._fetch(_events_query(task_id, after_id))
        return [_event_from_row(row) for row in rows]

    async def task_attempts(self, task_id: str, tenant: str | None = None) -> list[Attempt]:
        """The task's attempts, oldest first, read with the task in one transaction;
        `NotFound` when there is no such task or, given `tenant`, it is another tenant's."""
        owner, rows = await self._fetch_all(_owner_query(task_id), _attempts_query(task_id))
        _check_owner(task_id, owner, tenant)
        return [_attempt_from_row(row) for row in rows]

    async def task_events(self, task_id: str, after_id: int = 0,
                          tenant: str | None = None) -> list[TaskEvent]:
        """The task's events after `after_id`, in order; `NotFound` as `task_attempts`."""
        owner, rows = await self._fetch_all(_owner_query(task_id),
                                            _events_query(task_id, after_id))
        _check_owner(task_id, owner, tenant)
        return [_event_from_row(row) for row in rows]

    async def tenant_events(self, tenant: str, after_id: int = 0,
                            limit: int = MAX_PAGE) -> list[TaskEvent]:
        """The events of `tenant`'s tasks after `after_id`, in id order, at most `limit`."""
        rows = await self._fetch(
            select(events_table)
            .join(tasks_table, events_table.c.task_id == tasks_table.c.id)
            .where(tasks_table.c.tenant == tenant, events_table.c.id > after_id)
            .order_by(events_table.c.id)
            .limit(limit)
        )
        return [
            TaskEvent(id=row.id, task_id=row.task_id, kind=row.kind, at=_aware(row.at),
                      attempt=row.attempt, data=row.data)
            for row in rows
        ]

    async def last_event_id(self) -> int:
        """The id of the newest event of any task; 0 when there is none."""
        rows = await self._fetch(select(func.max(events_table.c.id)))
        return rows[0][0] or 0

    async def count_with_status(self, status: TaskStatus) -> int:
        """How many tasks have `status` (read from the status index)."""
        rows = await self._fetch(select(func.count()).select_from(tasks_table)
                                 .where(tasks_table.c.status == status.value))
        return rows[0][0]

    async def count_by_status(self, tenant: str | None = None) -> dict[str, int]:
        """Tasks per status, of every tenant or, with `tenant`, of that tenant's only."""
        query = select(tasks_table.c.status, func.count()).group_by(tasks_table.c.status)
        if tenant is not None:
            query = query.where(tasks_table.c.tenant == tenant)
        rows = await self._fetch(query)
        return {status: count for status, count in rows}

    async def agent_stats(self, since: datetime, tenant: str | None = None
                          ) -> dict[str, dict[str, Any]]:
        """How each agent type has fared since `since`, keyed by agent type; with `tenant`,
        over that tenant's tasks only.

        Task counts cover tasks that finished since then (`succeeded`, `failed`, `dead`,
        `cancelled`, their total `finished`, and `success_rate` = succeeded / finished, None
        when none finished). Attempt counts cover attempts started since then: `attempts`,
        `retried` (ended in error, timeout or lost: the outcomes that earn another attempt),
        `lost` and `timeouts`, and `cpu_s`, the CPU seconds those attempts used (0.0 when none
        was measured). Durations (`duration_mean_s`, `duration_p95_s`, None when no
        attempt was timed) come from the most recent `MAX_DURATION_ROWS` finished attempts:
        the time the replica measured, else finished minus started; lost attempts are not
        timed, since their end is when the loss was noticed. `timed` says how many were used
        and `durations_capped` whether the cap cut the sample short.
        """
        since = as_utc(since)
        scope: list[ColumnElement[bool]] = [tasks_table.c.agent_type.is_not(None)]
        if tenant is not None:
            scope.append(tasks_table.c.tenant == tenant)
        finished = await self._fetch(
            select(tasks_table.c.agent_type, tasks_table.c.status, func.count())
            .where(tasks_table.c.finished_at >= since, *scope)
            .group_by(tasks_table.c.agent_type, tasks_table.c.status)
        )
        joined = attempts_table.join(tasks_table, attempts_table.c.task_id == tasks_table.c.id)
        outcomes = await self._fetch(
            select(tasks_table.c.agent_type, attempts_table.c.outcome, func.count(),
                   func.sum(attempts_table.c.cpu_s))
            .select_from(joined)
            .where(attempts_table.c.started_at >= since, *scope)
            .group_by(tasks_table.c.agent_type, attempts_table.c.outcome)
        )
        timed = await self._fetch(
            select(tasks_table.c.agent_type, attempts_table.c.duration_s,
                   attempts_table.c.started_at, attempts_table.c.finished_at)
            .select_from(joined)
            .where(attempts_table.c.started_at >= since, *scope,
                   attempts_table.c.finished_at.is_not(None),
                   attempts_table.c.outcome.not_in(
                       [AttemptOutcome.RUNNING.value, AttemptOutcome.LOST.value]))
            .order_by(attempts_table.c.started_at.desc())
            .limit(MAX_DURATION_ROWS)
        )
        capped = len(timed) >= MAX_DURATION_ROWS

        counts: dict[str, dict[str, int]] = {}
        for agent_type, status, count in finished:
            counts.setdefault(agent_type, {})[status] = count
        attempt_counts: dict[str, dict[str, int]] = {}
        cpu_seconds: dict[str, float] = {}
        for agent_type, outcome, count, cpu_s in outcomes:
            attempt_counts.setdefault(agent_type, {})[outcome] = count
            cpu_seconds[agent_type] = cpu_seconds.get(agent_type, 0.0) + (cpu_s or 0.0)
        durations: dict[str, list[float]] = {}
        for agent_type, duration_s, started_at, finished_at in timed:
            if duration_s is None:
                duration_s = (_aware(finished_at) - _aware(started_at)).total_seconds()
            durations.setdefault(agent_type, []).append(max(0.0, duration_s))

        stats: dict[str, dict[str, Any]] = {}
        for agent_type in sorted({*counts, *attempt_counts}):
            by_status = counts.get(agent_type, {})
            by_outcome = attempt_counts.get(agent_type, {})
            timings = durations.get(agent_type, [])
            terminal = {s.value: by_status.get(s.value, 0) for s in
                        (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.DEAD,
                         TaskStatus.CANCELLED)}
            total = sum(terminal.values())
            stats[agent_type] = {
                **terminal,
                "finished": total,
                "success_rate": terminal["succeeded"] / total if total else None,
                "attempts": sum(by_outcome.values()),
                "retried": sum(by_outcome.get(o.value, 0) for o in RETRIED_OUTCOMES),
                "lost": by_outcome.get(AttemptOutcome.LOST.value, 0),
                "timeouts": by_outcome.get(AttemptOutcome.TIMEOUT.value, 0),
                "cpu_s": cpu_seconds.get(agent_type, 0.0),
                "timed": len(timings),
                "duration_mean_s": sum(timings) / len(timings) if timings else None,
                "duration_p95_s": percentile(timings, 95),
                "durations_capped": capped,
            }
        return stats

    async def batch_status(self, batch_id: str, tenant: str) -> BatchStatus:
        """Counts by status of `tenant`'s tasks in batch `batch_id` (one grouped query on the
        batch index). `NotFound` when the tenant has no task in that batch."""
        rows = await self._fetch(
            select(tasks_table.c.status, func.count(), func.min(tasks_table.c.created_at),
                   func.max(tasks_table.c.finished_at))
            .where(tasks_table.c.batch_id == batch_id, tasks_table.c.tenant == tenant)
            .group_by(tasks_table.c.status)
        )
        if not rows:
            raise NotFound(f"no batch {batch_id!r}", {"batch_id": batch_id})
        counts = {status.value: 0 for status in TaskStatus}
        created = [_aware(row[2]) for row in rows if row[2] is not None]
        finished = [_aware(row[3]) for row in rows if row[3] is not None]
        for status, count, _, _ in rows:
            counts[status] = count
        return BatchStatus(batch_id, tenant, counts, min(created, default=None),
                           max(finished, default=None))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank `q`th percentile of `values` (None if empty): the smallest value with
    at least q% of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _owner_query(task_id: str) -> Any:
    return select(tasks_table.c.tenant).where(tasks_table.c.id == task_id)


def _check_owner(task_id: str, owner: list[Any], tenant: str | None) -> None:
    """`NotFound` unless the task exists and, given `tenant`, is that tenant's (another
    tenant's task reads exactly like a missing one)."""
    if not owner or (tenant is not None and owner[0].tenant != tenant):
        raise NotFound(f"no task with id {task_id!r}", {"task_id": task_id})


def _attempts_query(task_id: str) -> Any:
    return (select(attempts_table).where(attempts_table.c.task_id == task_id)
            .order_by(attempts_table.c.number))


def _attempt_from_row(row: Any) -> Attempt:
    return Attempt(
        task_id=row.task_id, number=row.number, replica=row.replica,
        started_at=_aware(row.started_at), outcome=AttemptOutcome(row.outcome),
        finished_at=_aware(row.finished_at), error=TaskError.from_json(row.error),
        duration_s=row.duration_s, cpu_s=row.cpu_s,
    )


def _events_query(task_id: str, after_id: int) -> Any:
    return (select(events_table)
            .where(events_table.c.task_id == task_id, events_table.c.id > after_id)
            .order_by(events_table.c.id))


def _event_from_row(row: Any) -> TaskEvent:
    return TaskEvent(id=row.id, task_id=row.task_id, kind=row.kind, at=_aware(row.at),
                     attempt=row.attempt, data=row.data)
