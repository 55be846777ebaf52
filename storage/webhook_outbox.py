"""The webhook outbox: deliveries written in the same transaction as the event that causes them.

    batch.notifications.append(task_notification(...))   # TaskStore.apply enqueues them
    await enqueue(connection, [Notification(...)], now, retry_period_s)

Guarantees:
- A delivery row is committed together with the event (a task's or a run's terminal state, a
  step waiting for approval), or neither is: a crash can lose neither the event nor its
  deliveries, and the delivery actor sends whatever is pending when it (re)starts.
- One delivery per enabled subscription of the event's tenant that asks for its kind and whose
  agent-type or workflow filter (when set) matches, plus one to the task's (or run's)
  `callback_url` for a task's (or run's) terminal state. Matching happens in the database, in the same statement, against the
  subscriptions committed at that moment: a subscription made a moment before the event gets it.
  Another tenant's subscriptions never match.
- Each delivery's id (the `webhook-id` receivers dedupe by) is made once here and never changes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, bindparam, insert, literal, or_, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.model_base import JsonColumn, Timestamp
from storage.models import (
    tasks_table,
    workflow_runs_table as runs,
    webhook_deliveries_table as deliveries,
    webhook_subscriptions_table as subscriptions,
)
from storage.webhook_records import task_event_kind

DEFAULT_RETRY_PERIOD_S = 24 * 3600.0
MAX_RESULT_BYTES = 64 * 1024
_COLUMNS = ("id", "tenant", "subscription_id", "url", "order_key", "event_kind", "task_id",
            "run_id", "payload", "status", "attempts", "created_at", "next_attempt_at",
            "expires_at")


@dataclasses.dataclass(frozen=True)
class Notification:
    """An event some receivers may want: its tenant, kind (`EVENT_KINDS`), the `data` object
    receivers get, and what subscriptions filter on."""

    tenant: str
    kind: str
    data: dict[str, Any]
    task_id: str | None = None
    run_id: str | None = None
    agent_type: str | None = None
    workflow: str | None = None
    callback: bool = True  # False: its task or run has no callback_url (one query saved)


def task_notification(task_id: str, tenant: str, status: str, agent_type: str | None,
                      attempts: int, finished_at: datetime, result: Any = None,
                      error: Any = None, callback: bool = True) -> Notification:
    """A task's terminal state as a notification; a result over `MAX_RESULT_BYTES` of JSON is
    left out (`result_truncated`: the receiver reads it from the API)."""
    data: dict[str, Any] = {"task_id": task_id, "tenant": tenant, "agent_type": agent_type,
                            "status": status, "attempts": attempts,
                            "finished_at": finished_at.isoformat(), "error": error}
    if result is not None:
        try:
            size = len(json.dumps(result, separators=(",", ":"), default=str).encode())
        except (TypeError, ValueError):
            size = MAX_RESULT_BYTES + 1
        if size > MAX_RESULT_BYTES:
            data["result_truncated"] = True
        else:
            data["result"] = result
    else:
        data["result"] = None
    return Notification(tenant, task_event_kind(status), data, task_id=task_id,
                        agent_type=agent_type, callback=callback)


def run_notification(run_id: str, tenant: str, workflow: str, kind: str, data: dict[str, Any]
                     ) -> Notification:
    """A run's event (`run.succeeded`, …, `step.awaiting_approval`) as a notification."""
    return Notification(tenant, kind, {"run_id": run_id, "tenant": tenant, "workflow": workflow,
                                       **data}, run_id=run_id, workflow=workflow)


def _text(name: str) -> Any:
    return bindparam(name, type_=String())


def _matching_subscriptions() -> Any:
    """One delivery per matching subscription, the notification's fields as parameters."""
    s = subscriptions.c
    return select(
        literal("msg_", String()) + _text("token") + s.id, s.tenant, s.id, s.url,
        s.id + literal(":", String()) + _text("subject"), _text("kind"), _text("task_id"),
        _text("run_id"), bindparam("payload", type_=JsonColumn), literal("pending", String()),
        literal(0), bindparam("now", type_=Timestamp), bindparam("now2", type_=Timestamp),
        bindparam("expires", type_=Timestamp),
    ).where(
        s.tenant == _text("tenant"), s.enabled == true(),
        s.events.like(_text("pattern")),
        or_(s.agent_type.is_(None), s.agent_type == _text("agent_type")),
        or_(s.workflow.is_(None), s.workflow == _text("workflow")),
    )


def _run_callback() -> Any:
    """The delivery to a run's own `callback_url`, when it has one."""
    r = runs.c
    return select(
        literal("msg_", String()) + _text("token") + literal("cb", String()), r.tenant,
        literal(None, String()), r.callback_url,
        literal("cb:", String()) + _text("subject"), _text("kind"), _text("task_id"),
        _text("run_id"), bindparam("payload", type_=JsonColumn), literal("pending", String()),
        literal(0), bindparam("now", type_=Timestamp), bindparam("now2", type_=Timestamp),
        bindparam("expires", type_=Timestamp),
    ).where(r.id == _text("run_id"), r.tenant == _text("tenant"), r.callback_url.is_not(None))


def _task_callback() -> Any:
    """The delivery to a task's own `callback_url`, when it has one."""
    t = tasks_table.c
    return select(
        literal("msg_", String()) + _text("token") + literal("cb", String()), t.tenant,
        literal(None, String()), t.callback_url,
        literal("cb:", String()) + _text("subject"), _text("kind"), _text("task_id"),
        _text("run_id"), bindparam("payload", type_=JsonColumn), literal("pending", String()),
        literal(0), bindparam("now", type_=Timestamp), bindparam("now2", type_=Timestamp),
        bindparam("expires", type_=Timestamp),
    ).where(t.id == _text("task_id"), t.tenant == _text("tenant"), t.callback_url.is_not(None))


async def enqueue(connection: AsyncConnection, notifications: Sequence[Notification],
                  now: datetime, retry_period_s: float = DEFAULT_RETRY_PERIOD_S) -> None:
    """Write the deliveries `notifications` cause, inside the caller's transaction."""
    if notifications:
        await connection.run_sync(write_deliveries, notifications, now, retry_period_s)


def write_deliveries(connection: Connection, notifications: Sequence[Notification],
                     now: datetime, retry_period_s: float = DEFAULT_RETRY_PERIOD_S) -> None:
    """`enqueue` on a synchronous connection (a transaction run in one piece)."""
    if not notifications:
        return
    expires = now + timedelta(seconds=retry_period_s)
    stamp = now.isoformat()
    rows = []
    for note in notifications:
        rows.append({
            "token": uuid.uuid4().hex[:24], "subject": note.task_id or note.run_id or "-",
            "kind": note.kind, "task_id": note.task_id, "run_id": note.run_id,
            "payload": {"type": note.kind, "timestamp": stamp, "data": note.data},
            "now": now, "now2": now, "expires": expires, "tenant": note.tenant,
            "pattern": f"%,{note.kind},%", "agent_type": note.agent_type,
            "workflow": note.workflow,
        })
    subscribed, task_callback, run_callback = _delivery_inserts()
    connection.execute(subscribed, rows)
    for kind, statement in (("task.", task_callback), ("run.", run_callback)):
        callbacks = [{k: v for k, v in row.items()
                      if k not in ("pattern", "agent_type", "workflow")}
                     for row, note in zip(rows, notifications)
                     if note.kind.startswith(kind) and note.callback]
        if callbacks:
            connection.execute(statement, callbacks)


@functools.cache
def _delivery_inserts() -> tuple[Any, Any, Any]:
    """The three INSERT … SELECTs of `write_deliveries`, built once (building one costs more
    than running it): to matching subscriptions, to a task's and to a run's callback URL."""
    return tuple(insert(deliveries).from_select(_COLUMNS, source())  # type: ignore[return-value]
                 for source in (_matching_subscriptions, _task_callback, _run_callback))


async def enqueue_run_events(connection: AsyncConnection, run_id: str,
                             events: Sequence[tuple[str, dict[str, Any]]], now: datetime,
                             retry_period_s: float = DEFAULT_RETRY_PERIOD_S) -> None:
    """Enqueue a run's `events` ((kind, data) pairs: "run.succeeded", "step.awaiting_approval",
    …) inside the caller's transaction, with the run's tenant and workflow name."""
    if not events:
        return
    row = (await connection.execute(select(runs.c.tenant, runs.c.name)
                                    .where(runs.c.id == run_id))).first()
    if row is None:
        return
    await enqueue(connection, [run_notification(run_id, row.tenant, row.name, kind, data)
                               for kind, data in events], now, retry_period_s)


def run_finished(status: str, error: Any, now: datetime) -> tuple[str, dict[str, Any]]:
    """The (kind, data) of a run finishing as `status`."""
    return f"run.{status}", {"status": status, "error": error, "finished_at": now.isoformat()}


def steps_awaiting_approval(changes: Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    """The (kind, data) of each applied step change that makes a step await approval."""
    return [("step.awaiting_approval", {"step_id": change.step_id,
                                        "map_index": change.map_index})
            for change in changes if str(getattr(change.status, "value", change.status))
            == "awaiting_approval"]
