"""The workflow spec's data model: the validated, immutable form of a workflow's graph of steps.

`storage.workflow_spec` is the public door (it compiles documents into these classes and reads
them back from storage); `storage.workflow_validation` builds them. See `storage.workflow_spec`
for what a step is.
"""


from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


FAILURE_POLICIES = ("fail_fast", "finish_branches")
TIMEOUT_OUTCOMES = ("approve", "reject")
_STEP_KEYS = ("id", "agent_type", "description", "payload", "depends_on", "condition", "map_over",
              "approval", "timer", "timeout_s", "max_attempts", "priority", "compensate")
_SPEC_KEYS = ("name", "version", "steps", "failure_policy", "limits")


@dataclass(frozen=True)
class WorkflowLimits:
    """Bounds enforced when a spec is compiled (and carried by it, for its runs).

    max_steps: steps per run (200); max_fan_out: items of one mapped step (1,000);
    max_parallelism: items of one mapped step running at once (64); max_output_bytes: size of a
    step output that later steps may reference (256 KiB, enforced by the engine);
    max_run_duration_s: a run's lifetime, also the bound of any wait (7 days);
    max_step_timeout_s: one step's timeout (1 day); max_attempts: attempts per step (20)."""

    max_steps: int = 200
    max_fan_out: int = 1000
    max_parallelism: int = 64
    max_output_bytes: int = 256 * 1024
    max_run_duration_s: float = 7 * 24 * 3600.0
    max_step_timeout_s: float = 24 * 3600.0
    max_attempts: int = 20


@dataclass(frozen=True)
class MapSpec:
    """Fan-out: one task per element of the list `over` evaluates to (more than `max_width`
    elements fail the step), at most `parallelism` running at once."""

    over: str
    max_width: int
    parallelism: int


@dataclass(frozen=True)
class ApprovalSpec:
    """A person approves or rejects (with a comment); after `timeout_s`, `on_timeout` decides."""

    timeout_s: float
    on_timeout: str = "reject"


@dataclass(frozen=True)
class TimerSpec:
    """A durable wait: `wait_s` seconds after the step becomes ready, or `until` a UTC ISO time
    (exactly one is set)."""

    wait_s: float | None = None
    until: str | None = None


@dataclass(frozen=True)
class StepSpec:
    """One step; see the module docstring. `payload` is a template (compared, not hashed)."""

    id: str
    agent_type: str | None = None
    description: str | None = None
    payload: dict[str, Any] = field(default_factory=dict, hash=False)
    depends_on: tuple[str, ...] = ()
    condition: str | None = None
    map_over: MapSpec | None = None
    approval: ApprovalSpec | None = None
    timer: TimerSpec | None = None
    timeout_s: float | None = None
    max_attempts: int | None = None
    priority: int = 0
    compensate: str | None = None

    @property
    def is_task(self) -> bool:
        return self.agent_type is not None or self.description is not None


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    version: str
    steps: tuple[StepSpec, ...]
    failure_policy: str = "fail_fast"
    limits: WorkflowLimits = field(default_factory=WorkflowLimits)

    def step(self, step_id: str) -> StepSpec:
        """The step `step_id` (`KeyError` if there is none)."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    @property
    def compensation_ids(self) -> frozenset[str]:
        """The steps that run only when the run fails."""
        return frozenset(step.compensate for step in self.steps if step.compensate)

    def order(self) -> list[str]:
        """The ids of the run's (non-compensation) steps, dependencies first; ties keep the
        document's order."""
        return ready_steps(self, (), all_rounds=True)

    def to_json(self) -> dict[str, Any]:
        """The stored form: plain JSON (the document `compile_spec` would accept)."""
        steps = []
        for step in self.steps:
            data = dataclasses.asdict(step)
            data["depends_on"] = list(step.depends_on)
            steps.append({key: value for key, value in data.items() if value is not None})
        return {"name": self.name, "version": self.version, "failure_policy": self.failure_policy,
                "limits": dataclasses.asdict(self.limits), "steps": steps}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


def ready_steps(spec: WorkflowSpec, finished: Collection[str], *,
                all_rounds: bool = False) -> list[str]:
    """The steps not in `finished` whose dependencies all are, in document order (compensation
    steps excluded). `finished` holds the steps that reached an end (succeeded, skipped or
    failed): what a failed or skipped dependency means is the engine's rule, not this one. With
    `all_rounds`, every step in a topological order."""
    done = set(finished)
    pending = [step for step in spec.steps
               if step.id not in done and step.id not in spec.compensation_ids]
    ordered: list[str] = []
    while pending:
        ready = [step for step in pending if all(dep in done for dep in step.depends_on)]
        ordered.extend(step.id for step in ready)
        if not all_rounds or not ready:
            break
        done.update(step.id for step in ready)
        pending = [step for step in pending if step.id not in done]
    return ordered


def normalize_time(value: Any) -> str:
    """An ISO time with a timezone, as UTC ISO text (`ValueError` otherwise)."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO time text")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("must give a timezone (like 2026-01-01T09:00:00Z)")
    return parsed.astimezone(timezone.utc).isoformat()
