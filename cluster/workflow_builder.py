"""Writing a workflow in Python: a builder that compiles to the same spec as a JSON document.

    wf = Workflow("report", version="1")
    rows = wf.step("aggregate", agent_type="data_processor", payload={"rows": wf.input("rows")})
    total = wf.step("total", agent_type="calculator",
                    payload={"operation": "sum", "numbers": rows.output("rows[*].sales")})
    spec = wf.spec(agent_types)

A `Ref` in a payload renders to `"${ <expression> }"`; references in payloads, conditions and
`map_over` add their steps to `depends_on`, so the graph follows from the data. `document()` is the
JSON document and `spec()` compiles it with `storage.workflow_spec.compile_spec`: the builder adds
no rule of its own, so a built workflow and its document always give equal specs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from storage.errors import InvalidRequest
from storage.workflow_refs import (
    ExpressionError, expression_roots, reference, step_path, template_expressions)
from storage.workflow_spec import WorkflowLimits, WorkflowSpec, compile_spec


@dataclass(frozen=True)
class Ref:
    """A JMESPath expression over the run's context, used as a payload value or a condition."""

    expression: str

    def __str__(self) -> str:
        return reference(self.expression)

    def path(self, subpath: str) -> Ref:
        """This expression followed by `subpath` (`"rows[*].sales"`, `"[0]"`)."""
        if not subpath:
            return self
        joiner = "" if subpath.startswith("[") else "."
        return Ref(f"{self.expression}{joiner}{subpath}")


ITEM = Ref("item")
"""The current element inside a mapped step's payload."""


def _expression(value: str | Ref) -> str:
    return value.expression if isinstance(value, Ref) else value


def _render(value: Any) -> Any:
    if isinstance(value, Ref):
        return str(value)
    if isinstance(value, dict):
        return {key: _render(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_render(item) for item in value]
    return value


def _steps_read(expression: str) -> frozenset[str]:
    try:
        return expression_roots(expression).steps
    except ExpressionError:
        return frozenset()  # compile_spec refuses it, naming the step and field


class Step:
    """One step being written; its methods return the step, so they chain."""

    def __init__(self, workflow: Workflow, step_id: str, fields: dict[str, Any]) -> None:
        self._workflow = workflow
        self.id = step_id
        self._fields = fields
        self._after: list[str] = []

    def output(self, subpath: str = "") -> Ref:
        """A reference to this step's output (or a path inside it)."""
        return Ref(f"{step_path(self.id)}.output").path(subpath)

    def after(self, *steps: Step | str) -> Step:
        """Run after `steps` even when nothing of theirs is read."""
        self._after.extend(s.id if isinstance(s, Step) else s for s in steps)
        return self

    def when(self, condition: str | Ref) -> Step:
        """Run only when `condition` holds; otherwise the step is skipped."""
        self._fields["condition"] = _expression(condition)
        return self

    def map_over(self, items: str | Ref, max_width: int | None = None,
                 parallelism: int | None = None) -> Step:
        """One task per element of `items` (`ITEM` in the payload is the element)."""
        spec: dict[str, Any] = {"over": _expression(items)}
        if max_width is not None:
            spec["max_width"] = max_width
        if parallelism is not None:
            spec["parallelism"] = parallelism
        self._fields["map_over"] = spec
        return self

    def approval(self, timeout_s: float, on_timeout: str = "reject") -> Step:
        """Wait for a person's decision (at most `timeout_s`, then `on_timeout`)."""
        self._fields["approval"] = {"timeout_s": timeout_s, "on_timeout": on_timeout}
        return self

    def timer(self, wait_s: float | None = None, until: str | None = None) -> Step:
        """Wait `wait_s` seconds, or until an ISO time, before the step runs."""
        self._fields["timer"] = {key: value for key, value in
                                 (("wait_s", wait_s), ("until", until)) if value is not None}
        return self

    def compensate_with(self, step: Step | str) -> Step:
        """When the run fails after this step succeeded, run `step` (in reverse order)."""
        self._fields["compensate"] = step.id if isinstance(step, Step) else step
        return self

    def document(self) -> dict[str, Any]:
        fields = {key: _render(value) for key, value in self._fields.items() if value is not None}
        read: list[str] = list(self._after)
        known = {step.id for step in self._workflow._steps}
        for value in _expressions_of(fields):
            # a step that does not exist stays out, so the refusal names the expression reading it
            read.extend(sorted(_steps_read(value) & known))
        if read:
            fields["depends_on"] = list(dict.fromkeys(read))
        return {"id": self.id, **fields}


def _expressions_of(fields: dict[str, Any]) -> list[str]:
    found = template_expressions(fields.get("payload", {}))
    if fields.get("condition"):
        found.append(fields["condition"])
    if fields.get("map_over"):
        found.append(fields["map_over"]["over"])
    return found


class Workflow:
    """A workflow being written in Python; `spec()` validates and compiles it."""

    def __init__(self, name: str, version: str = "1", failure_policy: str = "fail_fast",
                 limits: dict[str, Any] | None = None) -> None:
        self.name = name
        self.version = version
        self.failure_policy = failure_policy
        self.limits = limits
        self._steps: list[Step] = []

    @staticmethod
    def input(subpath: str = "") -> Ref:
        """A reference to the run's input (or a path inside it)."""
        return Ref("input").path(subpath)

    def step(self, step_id: str, *, agent_type: str | None = None,
             description: str | None = None, payload: dict[str, Any] | None = None,
             depends_on: Iterable[Step | str] = (), timeout_s: float | None = None,
             max_attempts: int | None = None, priority: int | None = None) -> Step:
        """Add a step (a task for `agent_type`, or for the router by `description`)."""
        if any(existing.id == step_id for existing in self._steps):
            raise InvalidRequest(f"step {step_id!r} id: is used twice",
                                 {"step": step_id, "field": "id"})
        fields = {"agent_type": agent_type, "description": description,
                  "payload": payload if payload is not None else {}, "timeout_s": timeout_s,
                  "max_attempts": max_attempts, "priority": priority}
        step = Step(self, step_id, fields).after(*depends_on)
        self._steps.append(step)
        return step

    def document(self) -> dict[str, Any]:
        """The equivalent JSON document."""
        document: dict[str, Any] = {"name": self.name, "version": self.version,
                                    "failure_policy": self.failure_policy,
                                    "steps": [step.document() for step in self._steps]}
        if self.limits:
            document["limits"] = dict(self.limits)
        return document

    def spec(self, agent_types: Iterable[str], limits: WorkflowLimits | None = None
             ) -> WorkflowSpec:
        """The validated spec (`InvalidRequest` naming the step and field otherwise)."""
        return compile_spec(self.document(), agent_types, limits)
