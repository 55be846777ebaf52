"""Advancing a workflow run: a pure planner from a run's stored state to what happens next.

`plan(spec, run_input, steps, task_outcomes, now, tenant=...)` reads the run's step rows and the
outcomes of their tasks and returns a `Plan`: step changes (compare-and-set on the status read),
fan-out rows to add, tasks to submit, and the run's next status. It does no I/O. Beside it, the
pure steps the engine takes around a plan: `with_tasks` (fold the submitted tasks into the
plan's changes), `next_status` and `retry_set` (what a retry from a step runs again).

Guarantees (the rules the engine relies on):
- Deterministic and idempotent: the same state and `now` give the same plan; once a plan is
  applied (its changes and new rows stored, each submission's task linked with
  `Submission.started`), planning again gives nothing new. A step left `ready` without a task is
  submitted again with the same idempotency key (run id, step id, map index), so a crash between
  storing and submitting never loses nor doubles a task.
- A succeeded step is never changed; a step whose task succeeded records its result as output.
- A step is ready when every dependency finished. A skipped dependency counts as finished with
  output null (later steps read `steps.<id>.output` as null and its status as "skipped"). A step
  whose dependency failed or was cancelled is cancelled.
- Failure: under `fail_fast`, the first failed step cancels every step not yet started (a running
  task is let finish, its result recorded); under `finish_branches`, only what depends on it is
  cancelled. When nothing runs any more, the compensation steps of the steps that succeeded run
  one at a time, latest completion first; then the run fails with an error naming the step.
- Fan-out: the `map_over` list becomes item rows 0..n-1 (over `max_width` fails the step naming
  the limit), at most `parallelism` ready or running at once; the step's output is the list of
  item outputs in order. An item that fails fails the step.
- Waits: approval → `awaiting_approval` until now + timeout, then its timeout outcome; a timer →
  `timer` until due. A task step with a timer or approval waits first, then runs its task.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from actors.workflow_rules import FINISHED, Key, RunState, StepState, advance, run_outcome
from storage.errors import InvalidRequest
from storage.messages import TaskRequest, TaskStatus, as_utc
from storage.workflow_records import (
    UNCHANGED, UNMAPPED, NewStep, RunStatus, StepChange, StepStatus, WorkflowRun, WorkflowStep)
from storage.workflow_refs import evaluate, render_payload
from storage.workflow_spec import WorkflowSpec

_FAILED_TASK = frozenset({TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.CANCELLED})


@dataclass(frozen=True)
class TaskOutcome:
    """How a step's task ended (`status` a terminal task status; others are ignored)."""

    status: TaskStatus | str
    result: Any = None
    error: Any = None


@dataclass(frozen=True)
class Submission:
    """A task to submit for the `ready` step (`step_id`, `map_index`)."""

    step_id: str
    map_index: int
    request: TaskRequest

    def started(self, task_id: str) -> StepChange:
        """The change linking the submitted task to its step (ready → running)."""
        return StepChange(self.step_id, StepStatus.READY, StepStatus.RUNNING,
                          map_index=self.map_index, task_id=task_id)


@dataclass(frozen=True)
class Plan:
    """What to do next: apply `changes` and `new_steps` together (`update_steps`), submit each of
    `submissions` and link it, then set the run to `run_status` (with `error` when it failed).
    `wake_at` is the earliest timer or approval timeout still pending (None when none)."""

    changes: tuple[StepChange, ...] = ()
    new_steps: tuple[NewStep, ...] = ()
    submissions: tuple[Submission, ...] = ()
    run_status: RunStatus = RunStatus.RUNNING
    error: Any = None
    wake_at: datetime | None = None

    @property
    def has_work(self) -> bool:
        """Whether there is anything to store or submit."""
        return bool(self.changes or self.new_steps or self.submissions)


def idempotency_key(run_id: str, step_id: str, map_index: int = UNMAPPED,
                    generation: int = 0) -> str:
    """The idempotency key of the task of one step (or item) of a run; always the same within
    one generation of the run (a retry from a step starts the next generation, whose tasks are
    new)."""
    key = f"wf:{run_id}:{step_id}:{map_index}"
    return f"{key}:g{generation}" if generation else key


def step_label(key: str | None) -> str | None:
    """"run=<run> step=<step>" (with "[item]" for a fan-out item) for a task submitted by a
    workflow step (its idempotency key made by `idempotency_key`); None for other tasks."""
    if not key or not key.startswith("wf:"):
        return None
    parts = key.split(":")
    if len(parts) < 4:
        return None
    run_id, step_id, index = parts[1], ":".join(parts[2:-1]), parts[-1]
    if index.startswith("g") and len(parts) >= 5:  # a retried generation: wf:run:step:i:gN
        step_id, index = ":".join(parts[2:-2]), parts[-2]
    item = f"[{index}]" if index.lstrip("-").isdigit() and int(index) >= 0 else ""
    return f"run={run_id} step={step_id}{item}"


def _new_row(stored: WorkflowStep) -> StepState:
    order = (0, as_utc(stored.updated_at), 0) if stored.status in FINISHED else (1, None, 0)
    return StepState(stored.status, stored.task_id, stored.output, stored.error,
                     as_utc(stored.wake_at) if stored.wake_at else None,
                     stored.decision is not None, order)


def plan(spec: WorkflowSpec, run_input: Any, steps: Sequence[WorkflowStep],
         task_outcomes: Mapping[str, TaskOutcome], now: datetime, *, tenant: str,
         run_id: str | None = None, generation: int = 0) -> Plan:
    """The next `Plan` for a run (see the module docstring). `steps` are the run's stored rows
    (one per spec step, made by `initial_steps`, plus fan-out items; when some are missing, the
    plan only adds them); `task_outcomes` maps the task ids of ready and running steps to how
    their tasks ended (a task missing from it is taken as still running); `tenant` owns the run
    and its tasks; `run_id` defaults to the rows' run; `generation` is the run's (see
    `idempotency_key`)."""
    if run_id is None:
        if not steps:
            raise ValueError("plan needs the run's steps or its run_id")
        run_id = steps[0].run_id
    stored = {(s.step_id, s.map_index): s for s in steps}
    missing = [new for new in initial_steps(spec) if (new.step_id, UNMAPPED) not in stored]
    if missing:  # rows the run was created without: add them first, plan on them next time
        return Plan(new_steps=tuple(missing))
    state = RunState(spec, run_input, as_utc(now),
                     {key: _new_row(s) for key, s in stored.items()})
    _record_outcomes(state, task_outcomes)
    advance(state, lambda key: _request(state, key, run_id, tenant, generation))
    status, error = run_outcome(state)
    return Plan(changes=tuple(_changes(state, stored)),
                new_steps=tuple(NewStep(key[0], key[1], row.status, row.wake_at)
                                for key, row in state.rows.items() if key not in stored),
                submissions=tuple(Submission(key[0], key[1], state.requests[key])
                                  for key, row in state.rows.items()
                                  if row.status is StepStatus.READY and row.task_id is None
                                  and key in state.requests),
                run_status=status, error=error,
                wake_at=min((row.wake_at for row in state.rows.values()
                             if row.status in (StepStatus.TIMER, StepStatus.AWAITING_APPROVAL)
                             and row.wake_at is not None), default=None))


def initial_steps(spec: WorkflowSpec) -> list[NewStep]:
    """The rows a run starts with: one waiting row per step of its spec."""
    return [NewStep(step.id) for step in spec.steps]


def _record_outcomes(state: RunState, outcomes: Mapping[str, TaskOutcome]) -> None:
    limit = state.spec.limits.max_output_bytes
    for key, row in state.rows.items():
        outcome = outcomes.get(row.task_id) if row.task_id else None
        if outcome is None or row.status not in (StepStatus.READY, StepStatus.RUNNING):
            continue
        status = TaskStatus(outcome.status)
        if status is TaskStatus.SUCCEEDED:
            size = len(json.dumps(outcome.result, separators=(",", ":")).encode())
            if size > limit:
                state.set(key, StepStatus.FAILED, error={
                    "message": f"step {key[0]!r} output is {size} bytes; the limit "
                               f"max_output_bytes is {limit}", "step": key[0]})
            else:
                state.set(key, StepStatus.SUCCEEDED, output=outcome.result)
        elif status in _FAILED_TASK:
            state.set(key, StepStatus.FAILED, error=outcome.error if outcome.error is not None
                      else {"message": f"the task of step {key[0]!r} ended {status.value}"})


def _request(state: RunState, key: Key, run_id: str, tenant: str,
             generation: int) -> TaskRequest:
    """The task of the ready row `key` (raises ValueError/JMESPath errors on a bad payload)."""
    step = state.spec.step(key[0])
    context = state.context()
    if key[1] != UNMAPPED:
        assert step.map_over is not None
        context = {**context, "item": evaluate(step.map_over.over, context)[key[1]]}
    return TaskRequest(
        description=step.description or f"workflow {state.spec.name} step {step.id}",
        payload=render_payload(step.payload, context), agent_type=step.agent_type,
        priority=step.priority, timeout_s=step.timeout_s, max_attempts=step.max_attempts,
        idempotency_key=idempotency_key(run_id, key[0], key[1], generation), tenant=tenant)


def _changes(state: RunState, stored: Mapping[Key, WorkflowStep]) -> list[StepChange]:
    changes = []
    for key, row in state.rows.items():
        before = stored.get(key)
        if before is None or before.status is StepStatus.SUCCEEDED:
            continue
        original = _new_row(before)
        values = {name: getattr(row, name) for name in ("output", "error", "wake_at")
                  if getattr(row, name) != getattr(original, name)}
        if row.status is not before.status or values:
            changes.append(StepChange(key[0], before.status, row.status, map_index=key[1],
                                      output=values.get("output", UNCHANGED),
                                      error=values.get("error", UNCHANGED),
                                      wake_at=values.get("wake_at", UNCHANGED)))
    return changes


def retry_set(spec: WorkflowSpec, steps: Sequence[WorkflowStep], from_step: str) -> set[str]:
    """`from_step`, every step depending on it (directly or not), every step that did not
    succeed or was skipped, and every compensation step."""
    dependents: dict[str, set[str]] = collections.defaultdict(set)
    for step in spec.steps:
        for dependency in step.depends_on:
            dependents[dependency].add(step.id)
    chosen, frontier = {from_step}, [from_step]
    while frontier:
        for dependent in dependents[frontier.pop()]:
            if dependent not in chosen:
                chosen.add(dependent)
                frontier.append(dependent)
    for row in steps:
        if row.map_index == UNMAPPED and row.status not in (StepStatus.SUCCEEDED,
                                                              StepStatus.SKIPPED):
            chosen.add(row.step_id)
    return chosen | set(spec.compensation_ids)


def with_tasks(next_plan: Plan, submitted: dict[tuple[str, int], str | InvalidRequest]
                ) -> list[StepChange]:
    """The plan's changes with its submissions folded in: a step whose task was taken goes
    to running with its task id, one admission refused fails with the reason, one left out
    stays ready."""
    def outcome_of(change: StepChange, outcome: str | InvalidRequest) -> StepChange:
        if isinstance(outcome, str):
            return dataclasses.replace(change, status=StepStatus.RUNNING, task_id=outcome)
        return dataclasses.replace(change, status=StepStatus.FAILED, error={
            "code": outcome.code, "message": outcome.message, "details": outcome.details,
            "step": change.step_id})

    changes, planned = [], set()
    for change in next_plan.changes:
        key = (change.step_id, change.map_index)
        planned.add(key)
        outcome = submitted.get(key)
        changes.append(change if outcome is None else outcome_of(change, outcome))
    for submission in next_plan.submissions:
        key = (submission.step_id, submission.map_index)
        outcome = submitted.get(key)
        if key not in planned and outcome is not None:
            changes.append(outcome_of(StepChange(submission.step_id, StepStatus.READY,
                                                 StepStatus.READY, submission.map_index),
                                      outcome))
    # what finished first, then what starts: the events read in cause-and-effect order
    changes.sort(key=lambda change: StepStatus(change.status) not in FINISHED)
    return changes


def next_status(run: WorkflowRun, next_plan: Plan, busy: bool) -> RunStatus | None:
    """The status the run moves to after this plan; None when it stays."""
    status = next_plan.run_status
    if busy and status is RunStatus.WAITING:  # steps wait for room in the queue
        status = RunStatus.RUNNING
    if status is run.status or status is RunStatus.PENDING:
        return None
    return status
