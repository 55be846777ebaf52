"""What the workflow store writes, checked: the fields of runs and steps, the rows of new steps
and of events, the statuses a run may come from, and step changes as batched compare-and-set
updates. `storage.workflow_store` uses it; nothing here opens a connection of its own."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update

from storage.errors import InvalidRequest
from storage.models import workflow_steps_table as steps_table
from storage.storable import check_text
from storage.workflow_records import UNCHANGED, UNMAPPED, NewStep, RunStatus, StepChange, StepStatus

_LENGTHS = {"tenant": 64, "name": 128, "version": 64, "idempotency_key": 200,
            "step_id": 128, "actor": 128, "task_id": 32}


def check_text_field(field: str, value: Any, optional: bool = False) -> None:
    """`value` is a text within the length limit of `field` (or None, when `optional`)."""
    if value is None and optional:
        return
    check_text("workflow", field, value, _LENGTHS[field])


def check_json(field: str, value: Any) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"workflow {field} is not plain JSON: {exc}",
                             {"field": field}) from exc


def as_enum(kind: type[enum.Enum], field: str, value: Any) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidRequest(f"{field} {value!r} is not one of {allowed}",
                             {"field": field}) from None


def check_steps(new_steps: Sequence[NewStep]) -> None:
    keys = set()
    for step in new_steps:
        check_text_field("step_id", step.step_id)
        as_enum(StepStatus, "step status", step.status)
        if not isinstance(step.map_index, int) or step.map_index < UNMAPPED:
            raise InvalidRequest(f"step {step.step_id!r} has map_index {step.map_index!r}; "
                                 "it must be -1 (unmapped) or more", {"field": "map_index"})
        if (step.step_id, step.map_index) in keys:
            raise InvalidRequest(f"step {step.step_id!r} (item {step.map_index}) is given twice",
                                 {"field": "steps", "step": step.step_id})
        keys.add((step.step_id, step.map_index))


def event_row(run_id: str, kind: str, now: datetime, step_id: str | None = None,
               map_index: int | None = None, data: Any = None) -> dict[str, Any]:
    return {"run_id": run_id, "kind": kind, "step_id": step_id, "map_index": map_index,
            "at": now, "data": data}


def step_event(run_id: str, change: StepChange, now: datetime) -> dict[str, Any]:
    data = {}
    if change.task_id is not UNCHANGED and change.task_id is not None:
        data["task_id"] = change.task_id
    if change.error is not UNCHANGED and change.error is not None:
        data["error"] = change.error
    return event_row(run_id, f"step_{StepStatus(change.status).value}", now, change.step_id,
                      change.map_index, data or None)


def step_rows(run_id: str, new_steps: Sequence[NewStep], now: datetime) -> list[dict]:
    return [{"run_id": run_id, "step_id": s.step_id, "map_index": s.map_index,
             "status": StepStatus(s.status).value, "wake_at": s.wake_at, "updated_at": now}
            for s in new_steps]


# The statuses a run may come from to reach each status.
RUN_SOURCES = {
    RunStatus.PENDING: (),
    RunStatus.RUNNING: (RunStatus.PENDING, RunStatus.WAITING),
    RunStatus.WAITING: (RunStatus.PENDING, RunStatus.RUNNING),
    RunStatus.SUCCEEDED: (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING),
    RunStatus.FAILED: (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING),
    RunStatus.CANCELLED: (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING),
}


async def apply_changes(connection: Any, run_id: str, changes: Sequence[StepChange],
                         now: datetime) -> None:
    """The changes as one compare-and-set UPDATE per set of fields they write, each
    executed for all its rows at once (changes of one row keep their order)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    order: list[tuple[str, ...]] = []
    touched: dict[tuple[str, int], int] = {}
    for change in changes:
        fields = tuple(field for field in ("task_id", "output", "error", "wake_at")
                       if getattr(change, field) is not UNCHANGED)
        key = (change.step_id, change.map_index)
        if key in touched:  # a second change of one row: keep it after the first
            fields = fields + (f"#{touched[key]}",)
        touched[key] = touched.get(key, 0) + 1
        if fields not in groups:
            groups[fields] = []
            order.append(fields)
        groups[fields].append({
            "p_step": change.step_id, "p_index": change.map_index,
            "p_expected": StepStatus(change.expected).value,
            "p_status": StepStatus(change.status).value,
            **{f"p_{field}": getattr(change, field) for field in fields
               if not field.startswith("#")}})
    c = steps_table.c
    for fields in order:
        values: dict[str, Any] = {"status": bindparam("p_status"), "updated_at": now}
        for field in fields:
            if not field.startswith("#"):
                values[field] = bindparam(f"p_{field}", type_=c[field].type)
        statement = update(steps_table).where(
            c.run_id == run_id, c.step_id == bindparam("p_step"),
            c.map_index == bindparam("p_index"),
            c.status == bindparam("p_expected")).values(**values)
        await connection.execute(statement, groups[fields])


def runs_a_task(spec: Any, step_id: str) -> bool:
    """Whether the stored spec's step `step_id` runs a task (names an agent type or a
    description) besides waiting for its approval."""
    steps = spec.get("steps", []) if isinstance(spec, dict) else []
    step = next((step for step in steps if isinstance(step, dict) and step.get("id") == step_id),
                {})
    return bool(step.get("agent_type") or step.get("description"))
