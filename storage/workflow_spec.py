"""A workflow's spec: one validated, immutable data model for its graph of steps.

A spec comes from a JSON/YAML document (`compile_spec`) or the Python builder
(`cluster.workflow_builder`, which compiles to the same document); both give equal `WorkflowSpec`s.
The spec is stored with a run as plain JSON (`WorkflowSpec.to_json` and `spec_from_json` round-trip exactly) and never
changes under it. A step is one of:

- a task: exactly one of `agent_type` or `description` (left to the router), with a payload
  template (see `storage.workflow_refs`); an `approval` or `timer` on it is waited for first;
- a pure wait: no agent, and an `approval` (a person decides; the payload is what they see) or a
  `timer` (`wait_s`, or `until` an ISO time with a timezone).

`map_over` fans a step out over a list (one task per item, `item` in its context, at most
`max_width` items, `parallelism` at a time); a step depending on it receives the list of outputs.
A step whose `condition` is false is skipped. A step named by another's `compensate` is a
compensation step: it runs only when the run fails, in reverse order of the steps it compensates,
and may read that step and its ancestors. `compile_spec` refuses, with `InvalidRequest` naming the
step and field, everything a run could not execute; nothing is stored by it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from storage.errors import InvalidRequest
from storage.workflow_model import (
    FAILURE_POLICIES, TIMEOUT_OUTCOMES, ApprovalSpec, MapSpec, StepSpec, TimerSpec,
    WorkflowLimits, WorkflowSpec, normalize_time, ready_steps,
)
from storage.workflow_validation import parse_document

__all__ = ["FAILURE_POLICIES", "TIMEOUT_OUTCOMES", "ApprovalSpec", "MapSpec", "StepSpec",
           "TimerSpec", "WorkflowLimits", "WorkflowSpec", "compile_spec", "normalize_time",
           "ready_steps", "spec_from_json"]


def compile_spec(document: dict[str, Any] | str, agent_types: Iterable[str],
                 limits: WorkflowLimits | None = None) -> WorkflowSpec:
    """A validated spec from a JSON document (a dict) or YAML/JSON text.

    Raises `InvalidRequest` naming the step and field of the first problem."""
    if isinstance(document, str):
        document = _load_text(document)
    return parse_document(document, limits=limits or WorkflowLimits(),
                          agent_types=frozenset(agent_types))


def _load_text(text: str) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"the workflow is not valid YAML or JSON: {exc}",
                             {"field": "document"}) from exc
    if not isinstance(loaded, dict):
        raise InvalidRequest("a workflow document must be an object with 'name' and 'steps'",
                             {"field": "document"})
    return loaded


def spec_from_json(data: dict[str, Any]) -> WorkflowSpec:
    """The spec `WorkflowSpec.to_json` stored (its shape is checked; agent types are not)."""
    return parse_document(data, limits=None, agent_types=None)
