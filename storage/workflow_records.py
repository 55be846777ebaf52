"""What a stored workflow run and its steps look like, and the statuses they move through.

A run's status says whether the engine still has work on it (`pending`, `running`, `waiting`)
or it finished (`succeeded`, `failed`, `cancelled`, never changed again). A step row is one step
of the run's spec, or one item of a mapped (fan-out) step, linked to the task that executes it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.messages import as_utc

UNMAPPED = -1
"""The `map_index` of a step that is not one item of a fan-out."""


class RunStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # nothing to run until a timer or a person
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_RUN_STATUSES


FINISHED_RUN_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
UNFINISHED_RUN_VALUES = tuple(s.value for s in RunStatus if not s.is_finished)
FINISHED_RUN_VALUES = tuple(s.value for s in FINISHED_RUN_STATUSES)


class StepStatus(str, enum.Enum):
    WAITING = "waiting"  # for its dependencies
    READY = "ready"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    AWAITING_APPROVAL = "awaiting_approval"
    TIMER = "timer"


class Decision(str, enum.Enum):
    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True)
class WorkflowRun:
    id: str
    tenant: str
    name: str
    version: str
    spec: dict[str, Any]
    input: Any
    status: RunStatus
    idempotency_key: str | None
    error: Any
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    deadline_at: datetime | None
    generation: int = 0  # retries from a step so far
    callback_url: str | None = None  # told, signed, when the run finishes

    def to_json(self) -> dict[str, Any]:
        """The run as plain JSON (what the HTTP API and `--json` show), its spec included."""
        return {"id": self.id, "tenant": self.tenant, "name": self.name,
                "version": self.version, "status": self.status.value, "input": self.input,
                "error": self.error, "idempotency_key": self.idempotency_key,
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at),
                "finished_at": _iso(self.finished_at), "deadline_at": _iso(self.deadline_at),
                "generation": self.generation, "callback_url": self.callback_url,
                "spec": self.spec}


@dataclass(frozen=True)
class WorkflowStep:
    run_id: str
    step_id: str
    map_index: int
    status: StepStatus
    task_id: str | None
    output: Any
    error: Any
    decision: Decision | None
    decided_by: str | None
    decided_at: datetime | None
    decision_comment: str | None
    wake_at: datetime | None
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        decision = None
        if self.decision is not None:
            decision = {"decision": self.decision.value, "by": self.decided_by,
                        "at": _iso(self.decided_at), "comment": self.decision_comment}
        return {"step_id": self.step_id, "map_index": self.map_index,
                "status": self.status.value, "task_id": self.task_id, "output": self.output,
                "error": self.error, "decision": decision, "wake_at": _iso(self.wake_at),
                "updated_at": _iso(self.updated_at)}


@dataclass(frozen=True)
class RunDetail:
    """A run with its step rows (spec steps, then fan-out items by index)."""

    run: WorkflowRun
    steps: tuple[WorkflowStep, ...]

    def to_json(self) -> dict[str, Any]:
        return {**self.run.to_json(), "steps": [step.to_json() for step in self.steps]}


@dataclass(frozen=True)
class RunPage:
    """One page of a tenant's runs, newest first; `next_cursor` is None on the last page."""

    runs: tuple[WorkflowRun, ...]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"runs": [{k: v for k, v in run.to_json().items() if k != "spec"}
                         for run in self.runs], "next_cursor": self.next_cursor}


@dataclass(frozen=True)
class RunEvent:
    """One line of a run's event log: `kind` is `run_<status>` or `step_<status>` (also
    `step_approved`/`step_rejected`, `run_retried`); ids grow, so a stream resumes after one."""

    id: int
    run_id: str
    kind: str
    step_id: str | None
    map_index: int | None
    at: datetime
    data: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "run_id": self.run_id, "kind": self.kind,
                "step_id": self.step_id, "map_index": self.map_index, "at": _iso(self.at),
                "data": self.data}


@dataclass(frozen=True)
class NewStep:
    """A step row to create: at a run's creation, or later for the items of a fan-out."""

    step_id: str
    map_index: int = UNMAPPED
    status: StepStatus = StepStatus.WAITING
    wake_at: datetime | None = None


UNCHANGED: Any = object()
"""A `StepChange` field left as it is (None would set it to null)."""


@dataclass(frozen=True)
class StepChange:
    """Move one step from `expected` to `status`, setting the fields given (others stay)."""

    step_id: str
    expected: StepStatus
    status: StepStatus
    map_index: int = UNMAPPED
    task_id: Any = UNCHANGED
    output: Any = UNCHANGED
    error: Any = UNCHANGED
    wake_at: Any = UNCHANGED


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def _optional_time(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def run_from_row(row: Any) -> WorkflowRun:
    return WorkflowRun(
        id=row.id, tenant=row.tenant, name=row.name, version=row.version, spec=row.spec,
        input=row.input, status=RunStatus(row.status), idempotency_key=row.idempotency_key,
        error=row.error, created_at=as_utc(row.created_at), updated_at=as_utc(row.updated_at),
        finished_at=_optional_time(row.finished_at), deadline_at=_optional_time(row.deadline_at),
        generation=getattr(row, "generation", 0) or 0,
        callback_url=getattr(row, "callback_url", None),
    )


def event_from_row(row: Any) -> RunEvent:
    return RunEvent(id=row.id, run_id=row.run_id, kind=row.kind, step_id=row.step_id,
                    map_index=row.map_index, at=as_utc(row.at), data=row.data)


def step_from_row(row: Any) -> WorkflowStep:
    return WorkflowStep(
        run_id=row.run_id, step_id=row.step_id, map_index=row.map_index,
        status=StepStatus(row.status), task_id=row.task_id, output=row.output, error=row.error,
        decision=Decision(row.decision) if row.decision else None, decided_by=row.decided_by,
        decided_at=_optional_time(row.decided_at), decision_comment=row.decision_comment,
        wake_at=_optional_time(row.wake_at), updated_at=as_utc(row.updated_at),
    )
