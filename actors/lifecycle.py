"""Task lifecycle bookkeeping: the in-memory table of unfinished tasks and the writes that
record each transition.

Transitions: queued → running → succeeded | failed | queued (retry) | dead; queued → cancelled;
running → cancelled; dead → queued (requeue). Each transition stages its task update, attempt
update and event together; terminal transitions wait for the commit before waking waiters.

A running attempt may also add output events (`task_output`: streamed text, "output_delta" and
"output_error"); they are recorded only while that attempt is the task's current one, and are
staged in order before the attempt's outcome, so a reader sees an attempt's output before its end.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from actors.agent import payload_size
from actors.config import OrchestratorConfig
from actors.idempotency import IdempotencyLookup
from actors.metrics import OrchestratorMetrics
from actors.store_writer import StoreWriter
from actors.workflow_advance import step_label
from storage.messages import (
    AgentResult,
    AttemptOutcome,
    RouteDecision,
    RouteMethod,
    Task,
    TaskError,
    TaskEvent,
    TaskRequest,
    TaskStatus,
    new_task_id,
    utcnow,
)
from storage.errors import InvalidRequest
from storage.task_store import TaskStore, WriteBatch, task_from_row
from storage.webhook_outbox import task_notification


@dataclasses.dataclass(eq=False)
class LiveTask:
    """An unfinished task as the orchestrator tracks it."""

    id: str
    agent_type: str | None  # None until the router has decided
    description: str
    payload: dict[str, Any]
    priority: int
    attempts: int
    max_attempts: int
    timeout_s: float
    status: TaskStatus = TaskStatus.QUEUED
    replica: str | None = None
    replica_handle: Any = None
    cancel_requested: bool = False
    learnable: bool = False  # routed semantically: its success may teach the router
    route_confidence: float = 0.0
    tenant: str = "default"
    cpu_s: float = 0.0  # totals over its attempts so far (cost accounting)
    wall_s: float = 0.0
    attempt_started: float = 0.0  # time.monotonic() when the current attempt began
    workflow_step: str | None = None  # "run=<id> step=<id>" for a workflow step's task
    has_callback: bool = False  # it has a callback_url, to be told its outcome
    waiters: int = 0  # callers waiting for it (`wait`): its terminal commit reads it back
    final: Task | None = None  # the finished task as that commit read it
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    @classmethod
    def from_task(cls, task: Task) -> LiveTask:
        live = cls(task.id, task.agent_type, task.description, task.payload, task.priority,
                   task.attempts, task.max_attempts, task.timeout_s, tenant=task.tenant,
                   cpu_s=task.cpu_s, wall_s=task.wall_s,
                   workflow_step=step_label(task.idempotency_key),
                   has_callback=task.callback_url is not None)
        route = task.route or {}
        live.learnable = route.get("method") == RouteMethod.SEMANTIC.value
        live.route_confidence = float(route.get("confidence") or 0.0)
        return live


def _event(task_id: str, kind: str, at, attempt: int | None = None,
           data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"task_id": task_id, "kind": kind, "at": at, "attempt": attempt, "data": data}


RECENT_TENANTS = 100_000
OUTPUT_KINDS: dict[str, dict[str, type]] = {"output_delta": {"text": str, "index": int},
                "output_error": {"code": str, "message": str}}
"""The kinds of event a running attempt may add, and the fields (with types) of each."""
MAX_OUTPUT_EVENT_BYTES = 16_384
STARTED_LINGER_S = 0.005
"""How long an attempt's "started" records may wait to commit together with its outcome. A
crash in that window leaves the task queued, as a crash before any commit does today: it runs
again (at-least-once execution; one recorded outcome)."""

log = logging.getLogger("ymera.lifecycle")


def log_fields(live: LiveTask, attempt: int | None = None) -> dict[str, Any]:
    """The structured-log fields of a line about `live` (see `actors.logs`)."""
    return {"task_id": live.id, "attempt": attempt if attempt is not None else live.attempts,
            "agent_type": live.agent_type, "tenant": live.tenant}


class Lifecycle:
    """`on_commit` receives the events of every committed write (see `StoreWriter`);
    `metrics` counts each transition as it is recorded."""

    def __init__(self, store: TaskStore, config: OrchestratorConfig,
                 on_commit: Callable[[list[TaskEvent]], None] | None = None,
                 metrics: OrchestratorMetrics | None = None) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics or OrchestratorMetrics()
        self.writer = StoreWriter(store, config.write_batch_max, on_commit)
        self.key_lookup = IdempotencyLookup(store)
        self.writer.start()
        self.live: dict[str, LiveTask] = {}
        self.queued_count = 0
        self.queued_by_tenant: collections.Counter[str] = collections.Counter()
        self._recent_tenants: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.on_finished: Callable[[str], None] | None = None  # a task's end is committed

    def tenant_of(self, task_id: str) -> str | None:
        """Whose task this is, for tasks live or recently seen here; None otherwise."""
        live = self.live.get(task_id)
        return live.tenant if live is not None else self._recent_tenants.get(task_id)

    def _remember_tenant(self, task_id: str, tenant: str) -> None:
        self._recent_tenants[task_id] = tenant
        self._recent_tenants.move_to_end(task_id)
        while len(self._recent_tenants) > RECENT_TENANTS:
            self._recent_tenants.popitem(last=False)

    def _count_queued(self, live: LiveTask, change: int) -> None:
        self.queued_count += change
        self.queued_by_tenant[live.tenant] += change
        if not self.queued_by_tenant[live.tenant]:
            del self.queued_by_tenant[live.tenant]

    def _set_status(self, live: LiveTask, status: TaskStatus) -> None:
        if live.status is TaskStatus.QUEUED:
            self._count_queued(live, -1)
        if status is TaskStatus.QUEUED:
            self._count_queued(live, 1)
        live.status = status

    def _track(self, live: LiveTask) -> None:
        self.live[live.id] = live
        self._remember_tenant(live.id, live.tenant)
        if live.status is TaskStatus.QUEUED:
            self._count_queued(live, 1)

    def _forget(self, live: LiveTask) -> None:
        if self.live.pop(live.id, None) is not None and live.status is TaskStatus.QUEUED:
            self._count_queued(live, -1)
        live.done.set()
        if self.on_finished is not None:
            self.on_finished(live.id)

    async def reconcile(self, agent_types: dict[str, Any]) -> list[LiveTask]:
        """Rebuild the live table from storage after a (re)start; returns the tasks to queue."""
        now = utcnow()
        batch = WriteBatch()
        resumed: list[LiveTask] = []
        for task in await self.store.unfinished_tasks():
            live = LiveTask.from_task(task)
            if task.status is TaskStatus.RUNNING:
                error = TaskError("orchestrator_restarted",
                                  "the orchestrator restarted while this attempt ran", True)
                batch.attempt_updates.append({
                    "task_id": task.id, "number": task.attempts, "outcome": AttemptOutcome.LOST.value,
                    "finished_at": now, "error": error.to_json()})
                batch.events.append(_event(task.id, "attempt_lost", now, task.attempts,
                                           {"reason": error.message}))
                if task.attempts >= task.max_attempts:
                    self._terminal_writes(batch, live, TaskStatus.DEAD, now, error=error)
                    continue
            if live.agent_type is not None and live.agent_type not in agent_types:
                error = TaskError("unknown_agent_type",
                                  f"agent type {live.agent_type!r} is no longer registered")
                self._terminal_writes(batch, live, TaskStatus.FAILED, now, error=error)
                continue
            if task.status is TaskStatus.RUNNING:
                batch.task_updates.append({"id": task.id, "status": TaskStatus.QUEUED.value,
                                           "updated_at": now})
                batch.events.append(_event(task.id, "requeued", now, task.attempts,
                                           {"reason": "orchestrator restarted"}))
            self._track(live)
            resumed.append(live)
        await self.store.apply(batch)
        return resumed

    async def known_idempotency_keys(self, keys: list[tuple[str, str]]
                                     ) -> dict[tuple[str, str], str]:
        """The ids of stored tasks that these (tenant, key) pairs name (see `idempotency`)."""
        return await self.key_lookup.find(keys)

    async def create(self, accepted: list[tuple[TaskRequest, RouteDecision | None]]
                     ) -> list[tuple[LiveTask, Task]]:
        """Commit new tasks as queued; they are tracked only once durable. Each comes back with
        the task as committed. A task without a decision waits for the router (its agent type
        is None until then)."""
        if not accepted:
            return []
        now = utcnow()
        batch = WriteBatch()
        created = []
        for request, decision in accepted:
            task_id = new_task_id()
            agent_type = decision.agent_type if decision is not None else None
            batch.new_tasks.append({
                "id": task_id, "tenant": request.tenant, "description": request.description,
                "payload": request.payload, "agent_type": agent_type,
                "status": TaskStatus.QUEUED.value, "priority": request.priority, "attempts": 0,
                "max_attempts": request.max_attempts, "timeout_s": request.timeout_s,
                "idempotency_key": request.idempotency_key, "batch_id": request.batch_id,
                "route": decision.to_json() if decision is not None else None,
                "result": None, "error": None, "callback_url": request.callback_url,
                "created_at": now, "updated_at": now, "finished_at": None,
            })
            batch.events.append(_event(task_id, "queued", now, None, {"agent_type": agent_type}))
            created.append(LiveTask(task_id, agent_type, request.description,
                                    request.payload, request.priority, 0,
                                    request.max_attempts or 1, request.timeout_s or 1.0,
                                    tenant=request.tenant,
                                    workflow_step=step_label(request.idempotency_key),
                                    has_callback=request.callback_url is not None))
        for live in created:
            self._remember_tenant(live.id, live.tenant)  # its events publish once committed
        await self.writer.write(batch)
        for live in created:
            self._track(live)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("queued", extra=log_fields(live))
        return [(live, task_from_row(SimpleNamespace(**row)))
                for live, row in zip(created, batch.new_tasks)]

    def routed(self, live: LiveTask, decision: RouteDecision) -> None:
        """Record the router's decision; the task stays queued, now for `decision.agent_type`."""
        now = utcnow()
        live.agent_type = decision.agent_type
        live.learnable = decision.method is RouteMethod.SEMANTIC
        live.route_confidence = decision.confidence
        self.writer.stage(WriteBatch(
            task_updates=[{"id": live.id, "agent_type": decision.agent_type,
                           "route": decision.to_json(), "updated_at": now}],
            events=[_event(live.id, "routed", now, None, decision.to_json())]))

    async def unroutable(self, live: LiveTask, decision: RouteDecision | None,
                         error: TaskError) -> None:
        """Fail a task no agent type should take (or that the router could not decide);
        the decision, if any, is recorded with it."""
        now = utcnow()
        batch = WriteBatch()
        self._terminal_writes(batch, live, TaskStatus.FAILED, now, error=error)
        if decision is not None:
            batch.task_updates[-1]["route"] = decision.to_json()
        live.final = (await self.writer.write(batch)).get(live.id)
        self._forget(live)

    async def feedback_recorded(self, task: Task, outcome: dict[str, Any]) -> None:
        """Note on the task's event log that a user said where it should have gone."""
        self._remember_tenant(task.id, task.tenant)
        await self.writer.write(WriteBatch(events=[_event(
            task.id, "feedback", utcnow(), None, {"routed_to": task.agent_type, **outcome})]))

    def attempts_started(self, batch: list[LiveTask], replica: str) -> list[int]:
        """Mark tasks running on `replica`; returns each one's new attempt number."""
        now = utcnow()
        writes = WriteBatch()
        numbers = []
        for live in batch:
            attempt = live.attempts + 1
            live.attempts = attempt
            live.replica = replica
            live.attempt_started = time.monotonic()
            self._set_status(live, TaskStatus.RUNNING)
            numbers.append(attempt)
            writes.new_attempts.append({
                "task_id": live.id, "number": attempt, "replica": replica,
                "outcome": AttemptOutcome.RUNNING.value, "started_at": now, "finished_at": None,
                "duration_s": None, "error": None})
            writes.task_updates.append({"id": live.id, "status": TaskStatus.RUNNING.value,
                                        "attempts": attempt, "updated_at": now})
            writes.events.append(_event(live.id, "started", now, attempt, {"replica": replica}))
            if log.isEnabledFor(logging.DEBUG):
                log.debug("attempt started on %s", replica, extra=log_fields(live, attempt))
        self.writer.stage(writes, linger_s=STARTED_LINGER_S)
        return numbers

    def task_output(self, task_id: str, attempt: int, kind: str, data: dict[str, Any]) -> bool:
        """Stage an output event of `attempt` of `task_id`; False (nothing recorded) when that
        attempt is not the task's running one. Bad events are `InvalidRequest`."""
        fields = OUTPUT_KINDS.get(kind)
        if fields is None:
            raise InvalidRequest(f"output event kind {kind!r} is not one of "
                                 f"{', '.join(OUTPUT_KINDS)}", {"field": "kind"})
        if not (isinstance(data, dict) and set(data) == set(fields)
                and all(isinstance(data[name], kind_of) and not isinstance(data[name], bool)
                        for name, kind_of in fields.items())):
            described = ", ".join(f"{name!r} ({kind_of.__name__})"
                                  for name, kind_of in fields.items())
            raise InvalidRequest(f"a {kind} event's data must have exactly {described}",
                                 {"field": "data"})
        size = payload_size(data)
        if size > MAX_OUTPUT_EVENT_BYTES:
            raise InvalidRequest(f"an output event is {size} bytes; at most "
                                 f"{MAX_OUTPUT_EVENT_BYTES} are recorded", {"field": "data"})
        live = self.live.get(task_id)
        if live is None or live.status is not TaskStatus.RUNNING or live.attempts != attempt:
            return False
        self.writer.stage(WriteBatch(events=[_event(task_id, kind, utcnow(), attempt, data)]))
        return True

    async def attempt_finished(self, live: LiveTask, attempt: int, result: AgentResult | None,
                               error: TaskError | None, lost: bool) -> float | None:
        """Record how an attempt ended. Returns when to retry (`time.monotonic()`), or None."""
        now = utcnow()
        batch = WriteBatch()
        agent_type = live.agent_type
        assert agent_type is not None  # an attempt runs only once the task is routed
        ok = result is not None and result.ok
        if ok:
            outcome = AttemptOutcome.SUCCEEDED
        elif live.cancel_requested:
            outcome, error = AttemptOutcome.CANCELLED, TaskError("cancelled", "cancelled by request")
        elif lost:
            outcome = AttemptOutcome.LOST
        elif error is not None and error.code == "timeout":
            outcome = AttemptOutcome.TIMEOUT
        elif error is not None and error.retryable:
            outcome = AttemptOutcome.ERROR
        else:
            outcome = AttemptOutcome.FAILED
        wall_s = result.duration_s if result else time.monotonic() - live.attempt_started
        cpu_s = result.cpu_s if result else 0.0
        live.wall_s += wall_s
        live.cpu_s += cpu_s
        self.metrics.attempt_finished(agent_type, live.tenant, outcome.value, wall_s, cpu_s)
        batch.attempt_updates.append({
            "task_id": live.id, "number": attempt, "outcome": outcome.value, "finished_at": now,
            "duration_s": wall_s, "cpu_s": cpu_s if result else None,
            "error": error.to_json() if error and not ok else None})
        cost = {"cpu_s": live.cpu_s, "wall_s": live.wall_s}

        if ok:
            assert result is not None
            self._terminal_writes(batch, live, TaskStatus.SUCCEEDED, now, result=result.result,
                                  fence=attempt, cost=cost)
        elif outcome is AttemptOutcome.CANCELLED:
            self._terminal_writes(batch, live, TaskStatus.CANCELLED, now, error=error,
                                  fence=attempt, cost=cost)
        elif outcome is AttemptOutcome.FAILED:
            self._terminal_writes(batch, live, TaskStatus.FAILED, now, error=error,
                                  fence=attempt, cost=cost)
        elif attempt >= live.max_attempts:
            batch.events.append(_event(live.id, f"attempt_{outcome.value}", now, attempt,
                                       {"error": error.to_json() if error else None}))
            self._terminal_writes(batch, live, TaskStatus.DEAD, now, error=error,
                                  fence=attempt, cost=cost)
        else:
            delay = self.config.retry.delay_after(attempt)
            self._set_status(live, TaskStatus.QUEUED)
            self.metrics.retry_scheduled(agent_type, outcome.value)
            log.info("attempt %d ended %s (%s); retry in %.2fs", attempt, outcome.value,
                     error.message if error else "no error", delay,
                     extra=log_fields(live, attempt))
            batch.task_updates.append({"id": live.id, "fence_attempt": attempt,
                                       "status": TaskStatus.QUEUED.value, "updated_at": now,
                                       **cost})
            batch.events.append(_event(live.id, "retry_scheduled", now, attempt, {
                "outcome": outcome.value, "delay_s": round(delay, 3),
                "error": error.to_json() if error else None}))
            self.writer.stage(batch)
            return time.monotonic() + delay
        live.final = (await self.writer.write(batch)).get(live.id)
        self._forget(live)
        return None

    def _terminal_writes(self, batch: WriteBatch, live: LiveTask, status: TaskStatus, now,
                         *, result: Any = None, error: TaskError | None = None,
                         fence: int | None = None, cost: dict[str, float] | None = None) -> None:
        update = {"id": live.id, "status": status.value, "result": result,
                  "error": error.to_json() if error else None, "finished_at": now,
                  "updated_at": now, **(cost or {})}
        if fence is not None:
            update["fence_attempt"] = fence
        self.metrics.task_finished(live.agent_type, live.tenant, status.value)
        level = logging.DEBUG if status in (TaskStatus.SUCCEEDED, TaskStatus.CANCELLED) \
            else logging.WARNING
        if log.isEnabledFor(level):  # most tasks succeed: no log fields built for them at INFO
            log.log(level, "%s%s", status.value,
                    f": {error.code}: {error.message}" if error else "", extra=log_fields(live))
        batch.task_updates.append(update)
        if live.waiters:
            batch.read_back.append(live.id)
        data = {"error": error.to_json()} if error else None
        batch.events.append(_event(live.id, status.value, now, live.attempts or None, data))
        batch.notifications.append(task_notification(
            live.id, live.tenant, status.value, live.agent_type, live.attempts, now,
            result=result, error=data["error"] if data else None, callback=live.has_callback))

    async def cancelled_while_queued(self, live: LiveTask) -> None:
        now = utcnow()
        batch = WriteBatch()
        self._terminal_writes(batch, live, TaskStatus.CANCELLED, now,
                              error=TaskError("cancelled", "cancelled by request"))
        live.final = (await self.writer.write(batch)).get(live.id)
        self._forget(live)

    async def requeue(self, task: Task) -> LiveTask:
        now = utcnow()
        live = LiveTask.from_task(task)
        live.max_attempts = task.attempts + self.config.retry.max_attempts
        self._remember_tenant(task.id, task.tenant)
        await self.writer.write(WriteBatch(
            task_updates=[{"id": task.id, "fence_attempt": task.attempts,
                           "status": TaskStatus.QUEUED.value, "max_attempts": live.max_attempts,
                           "error": None, "finished_at": None, "updated_at": now}],
            events=[_event(task.id, "requeued", now, task.attempts,
                           {"reason": "operator requeue"})],
        ))
        self._track(live)
        return live
