"""Request bodies and answer shapes of the workflow routes (`serve_apps.routes.workflows`).

Bodies are `schemas.StrictBody` models: unknown fields, values of the wrong type and NUL
characters are refused with the `invalid_request` envelope naming the field. What a workflow
document may say (steps, references, limits) is checked once, by the orchestrator when it
compiles the document (`storage.workflow_spec.compile_spec`), for HTTP and Python alike.

The answer models mirror `storage.workflow_records` `to_json` exactly: a run (`RunOut`), a run
with its step rows (`RunDetailOut`), a page of runs without their specs (`RunPageOut`), and
the run's event log (`RunEventsOut`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serve_apps.schemas import StrictBody
from storage.messages import NAME_PATTERN as _STEP_ID

_REPORT: dict[str, Any] = {
    "name": "report", "version": "1",
    "steps": [
        {"id": "total", "agent_type": "calculator",
         "payload": {"expression": "${ input.expression }"}},
        {"id": "check", "depends_on": ["total"], "approval": {"timeout_s": 3600},
         "payload": {"total": "${ steps.total.output }"}},
    ],
}


class WorkflowBody(StrictBody):
    """A workflow document (an object, or its YAML/JSON text) and the run's input."""

    workflow: dict[str, Any] | str
    input: Any = None
    callback_url: str | None = Field(default=None, max_length=2048, description=(
        "Called (signed with the tenant's callback secret) when the run finishes: "
        "docs/webhooks.md"))

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"workflow": _REPORT, "input": {"expression": "120 + 80"}}]})


class DecisionBody(StrictBody):
    """A person's decision on a step awaiting approval; `map_index` names one item of a
    fanned-out step (-1: the step itself)."""

    comment: str | None = Field(default=None, max_length=4000)
    map_index: int = Field(default=-1, ge=-1)


class RetryBody(StrictBody):
    """Run `from_step` again, with what depends on it (and whatever failed or was cancelled)."""

    from_step: str = Field(pattern=_STEP_ID)


class StepDecisionOut(BaseModel):
    decision: str
    by: str | None
    at: str | None
    comment: str | None


class StepOut(BaseModel):
    """One step row: a spec step, or one item (`map_index` ≥ 0) of a fanned-out step."""

    step_id: str
    map_index: int
    status: str
    task_id: str | None
    output: Any
    error: Any
    decision: StepDecisionOut | None
    wake_at: str | None
    updated_at: str


class RunSummaryOut(BaseModel):
    """A run as listed: everything but its spec."""

    id: str
    tenant: str
    name: str
    version: str
    status: str
    input: Any
    error: Any
    idempotency_key: str | None
    created_at: str
    updated_at: str
    finished_at: str | None
    deadline_at: str | None
    generation: int


class RunDetailOut(RunSummaryOut):
    """A run with the spec it runs (never changed under it) and its step rows."""

    spec: dict[str, Any]
    steps: list[StepOut]


class RunPageOut(BaseModel):
    runs: list[RunSummaryOut]
    next_cursor: str | None


class RunEventOut(BaseModel):
    """One line of a run's event log: `run_<status>`, `step_<status>`, `step_approved`,
    `step_rejected` or `run_retried`; ids grow, so a reader resumes after the last it saw."""

    id: int
    run_id: str
    kind: str
    step_id: str | None
    map_index: int | None
    at: str
    data: Any


class RunEventsOut(BaseModel):
    events: list[RunEventOut]
