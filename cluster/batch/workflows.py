"""Batch lines that name a workflow: each becomes a run instead of a task.

    {"workflow": "report.yaml", "input": {"rows": [...]}}
    {"workflow": {"name": "one", "steps": [...]}, "input": {}, "idempotency_key": "nightly-7"}

`workflow` is a file (.yaml, .yml or .json; a relative path is relative to the batch file's
directory) or the document itself; `input` is the run's input (`{}` when absent). The run's
idempotency key is the line's own, else `batch:<batch id>:<line>`, so running a batch again gets
the runs it already has. The orchestrator validates the document when the run is submitted; its
refusal is reported for that line, as a refused task is. A run's result line carries its status
(succeeded, failed or cancelled), its id, and the outputs of the steps nothing depends on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from storage.workflow_records import UNMAPPED, RunDetail, StepStatus

WORKFLOW_LINE_FIELDS = frozenset({"workflow", "input", "idempotency_key"})
MAX_KEY_CHARS = 200
MAX_WORKFLOW_FILE_BYTES = 1 << 20
WORKFLOW_SUFFIXES = (".yaml", ".yml", ".json")


@dataclasses.dataclass(frozen=True)
class WorkflowRequest:
    """A run to start for one line: the document, its input and the run's idempotency key;
    `source` is the file the line named, or `inline`."""

    document: dict[str, Any]
    input: Any
    idempotency_key: str
    tenant: str
    source: str = "inline"


class LineProblem(Exception):
    """What is wrong with a workflow line (reported for the line, never raised further)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(code, message, details)
        self.code, self.message, self.details = code, message, details or {}


def workflow_request(data: dict[str, Any], number: int, *, batch_id: str, tenant: str,
                     max_payload_bytes: int,
                     load: Callable[[str], dict[str, Any]]) -> WorkflowRequest:
    """The run a workflow line asks for (`LineProblem` when it cannot be one); `load` reads
    the document of a file the line names."""
    unknown = sorted(set(data) - WORKFLOW_LINE_FIELDS)
    if unknown:
        raise LineProblem("invalid_workflow", f"{unknown[0]} is not a field of a workflow line; "
                          f"known fields: {', '.join(sorted(WORKFLOW_LINE_FIELDS))}",
                          {"field": unknown[0]})
    named = data["workflow"]
    if isinstance(named, str) and named.strip():
        document, source = load(named.strip()), named.strip()
    elif isinstance(named, dict):
        document, source = named, "inline"
    else:
        raise LineProblem("invalid_workflow", "workflow must be a file name or a workflow "
                          "document (an object)", {"field": "workflow"})
    value = data.get("input", {})
    try:
        size = len(json.dumps(value, allow_nan=False, separators=(",", ":")))
    except ValueError as exc:
        raise LineProblem("invalid_workflow", f"input is not valid JSON: {exc}",
                          {"field": "input"}) from None
    if size > max_payload_bytes:
        raise LineProblem("payload_too_large", f"input is {size} bytes; the limit is "
                          f"{max_payload_bytes}", {"field": "input", "size": size})
    key = data.get("idempotency_key", f"batch:{batch_id}:{number}")
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_CHARS:
        raise LineProblem("invalid_workflow", "idempotency_key must be a non-empty string of "
                          f"at most {MAX_KEY_CHARS} characters", {"field": "idempotency_key"})
    return WorkflowRequest(document, value, key, tenant, source)


def parse_document(text: str, name: str) -> dict[str, Any]:
    """The document in a workflow file's text (YAML or JSON); `LineProblem` naming the file."""
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LineProblem("invalid_workflow", f"workflow {name} is not valid YAML or JSON: "
                          f"{exc}", {"field": "workflow", "workflow": name}) from None
    if not isinstance(loaded, dict):
        raise LineProblem("invalid_workflow", f"workflow {name} must be an object with 'name' "
                          "and 'steps'", {"field": "workflow", "workflow": name})
    return loaded


def run_result(number: int, detail: RunDetail) -> dict[str, Any]:
    """One results line for a finished run (the task fields of a results line are empty)."""
    run = detail.run
    return {"line": number, "status": run.status.value, "run_id": run.id, "workflow": run.name,
            "task_id": None, "agent_type": None, "attempts": 0,
            "result": final_outputs(detail), "error": run.error}


def final_outputs(detail: RunDetail) -> dict[str, Any]:
    """The outputs of the run's succeeded steps that no other step depends on (compensation
    steps aside): what the run produced."""
    steps = detail.run.spec.get("steps", []) if isinstance(detail.run.spec, dict) else []
    named = {step.get("id") for step in steps if isinstance(step, dict)}
    needed = {dependency for step in steps if isinstance(step, dict)
              for dependency in step.get("depends_on") or ()}
    compensation = {step.get("compensate") for step in steps if isinstance(step, dict)}
    leaves = named - needed - compensation - {None}
    return {row.step_id: row.output for row in detail.steps
            if row.step_id in leaves and row.map_index == UNMAPPED
            and row.status is StepStatus.SUCCEEDED}
