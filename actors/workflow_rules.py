"""The transition rules `actors.workflow_advance.plan` applies to a run's steps until none applies.

`RunState` is an in-memory copy of a run's step rows. Each rule moves rows forward (never back,
never off `succeeded`), so repeating them reaches a fixed point; `plan` turns the difference into
compare-and-set changes. See `actors.workflow_advance` for the semantics they implement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from storage.messages import TaskRequest, as_utc
from storage.workflow_records import UNMAPPED, RunStatus, StepStatus
from storage.workflow_refs import condition_holds, evaluate
from storage.workflow_spec import StepSpec, WorkflowSpec

FINISHED = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED,
                      StepStatus.CANCELLED})
NOT_STARTED = frozenset({StepStatus.WAITING, StepStatus.AWAITING_APPROVAL, StepStatus.TIMER})
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)

Key = tuple[str, int]
"""A step row: (step id, map index)."""


@dataclass
class StepState:
    """One step row as the rules see it. `order` ranks completions: (0, stored time, 0) for a
    row that finished before, (1, None, n) for the n-th one finished by this plan."""

    status: StepStatus
    task_id: str | None = None
    output: Any = None
    error: Any = None
    wake_at: datetime | None = None
    decided: bool = False
    order: tuple[int, Any, int] = (1, None, 0)


@dataclass
class RunState:
    """The rows of one run being planned, and the tasks built for its ready rows."""

    spec: WorkflowSpec
    run_input: Any
    now: datetime
    rows: dict[Key, StepState]
    requests: dict[Key, TaskRequest] = field(default_factory=dict)
    finished_here: int = 0
    _context: dict[str, Any] | None = field(default=None, repr=False)

    def set(self, key: Key, status: StepStatus, **values: Any) -> None:
        self._context = None
        row = self.rows[key]
        row.status = status
        for name, value in values.items():
            setattr(row, name, value)
        if status in FINISHED and status is not StepStatus.SKIPPED:
            self.finished_here += 1
            row.order = (1, None, self.finished_here)

    def context(self) -> dict[str, Any]:
        """The expression context: the input and every step's output (null unless it
        succeeded) and status. Built once per state of the rows (`set` clears it): callers
        must not change it."""
        if self._context is None:
            self._context = self._build_context()
        return self._context

    def _build_context(self) -> dict[str, Any]:
        steps = {}
        for (step_id, index), row in self.rows.items():
            if index == UNMAPPED:
                output = row.output if row.status is StepStatus.SUCCEEDED else None
                steps[step_id] = {"output": output, "status": row.status.value}
        return {"input": self.run_input, "steps": steps}

    def items(self, step_id: str) -> list[Key]:
        return sorted(key for key in self.rows if key[0] == step_id and key[1] != UNMAPPED)


MakeRequest = Callable[[Key], TaskRequest]


def wait_until(step: StepSpec, now: datetime) -> datetime:
    """When the timer of `step`, started at `now`, is due."""
    assert step.timer is not None
    if step.timer.until is not None:
        return as_utc(datetime.fromisoformat(step.timer.until))
    return now + timedelta(seconds=step.timer.wait_s or 0.0)


def _bad_expression() -> tuple[type[BaseException], ...]:
    from jmespath.exceptions import JMESPathError

    return (JMESPathError, ValueError, TypeError, IndexError, KeyError)


def advance(state: RunState, make_request: MakeRequest) -> None:
    """Apply every rule until none changes a row."""
    rules = (_wake, _start_dependents, _fail_fast, _fan_in, _release_items, _compensate)
    for _ in range(4 * len(state.rows) + 16):
        before = [(key, row.status) for key, row in state.rows.items()]
        for rule in rules:
            rule(state)
        _render(state, make_request)
        if before == [(key, row.status) for key, row in state.rows.items()]:
            break
    if run_outcome(state)[0] in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        for key, row in state.rows.items():
            if key[0] in state.spec.compensation_ids and row.status is StepStatus.WAITING:
                state.set(key, StepStatus.SKIPPED)


def run_outcome(state: RunState) -> tuple[RunStatus, Any]:
    """The run's status after the rules, and its error when it failed."""
    spec = state.spec
    failed = _first_failure(state)
    main_done = all(row.status in FINISHED for key, row in state.rows.items()
                    if key[0] not in spec.compensation_ids)
    if main_done and failed is None:
        # without a failure a step is cancelled only by a cancel of the run (or its deadline)
        if any(row.status is StepStatus.CANCELLED for row in state.rows.values()):
            return RunStatus.CANCELLED, {"message": "cancelled by request"}
        return RunStatus.SUCCEEDED, None
    if main_done and failed is not None and all(
            state.rows[(c, UNMAPPED)].status in FINISHED for c in _compensations(state)):
        row = state.rows[failed]
        error = {"step": failed[0], "message": f"step {failed[0]!r} failed", "error": row.error}
        return RunStatus.FAILED, error
    statuses = [row.status for key, row in state.rows.items() if not _is_fan_out_parent(state, key)]
    if any(s in (StepStatus.READY, StepStatus.RUNNING) for s in statuses):
        return RunStatus.RUNNING, None
    if any(s in (StepStatus.AWAITING_APPROVAL, StepStatus.TIMER) for s in statuses):
        return RunStatus.WAITING, None
    return RunStatus.RUNNING, None


def _is_fan_out_parent(state: RunState, key: Key) -> bool:
    return key[1] == UNMAPPED and state.spec.step(key[0]).map_over is not None


def _first_failure(state: RunState) -> Key | None:
    """The first non-compensation step that failed (by completion, then document order)."""
    spec = state.spec
    failed = [(row.order[0], row.order[1] or _EARLIEST, row.order[2], position, step.id)
              for position, step in enumerate(spec.steps)
              if step.id not in spec.compensation_ids
              for row in [state.rows[(step.id, UNMAPPED)]] if row.status is StepStatus.FAILED]
    return (min(failed)[4], UNMAPPED) if failed else None


def _begin(state: RunState, key: Key, step: StepSpec) -> None:
    """Start `step` (its dependencies finished and its condition held): its wait, else its work."""
    if step.timer is not None:
        state.set(key, StepStatus.TIMER, wake_at=wait_until(step, state.now))
    elif step.approval is not None:
        state.set(key, StepStatus.AWAITING_APPROVAL,
                  wake_at=state.now + timedelta(seconds=step.approval.timeout_s))
    else:
        _begin_work(state, key, step)


def _begin_work(state: RunState, key: Key, step: StepSpec) -> None:
    """After its waits, a task step becomes ready, or fans out when mapped."""
    if step.map_over is not None:
        _fan_out(state, key, step)
    elif step.is_task:
        state.set(key, StepStatus.READY, wake_at=None)


def _fan_out(state: RunState, key: Key, step: StepSpec) -> None:
    assert step.map_over is not None
    try:
        items = evaluate(step.map_over.over, state.context())
    except _bad_expression() as exc:
        state.set(key, StepStatus.FAILED, wake_at=None, error={
            "step": step.id, "message": f"step {step.id!r} map_over failed: {exc}"})
        return
    if not isinstance(items, list):
        state.set(key, StepStatus.FAILED, wake_at=None, error={
            "step": step.id, "message": f"step {step.id!r} map_over must give a list, "
                                        f"got {type(items).__name__}"})
    elif len(items) > step.map_over.max_width:
        state.set(key, StepStatus.FAILED, wake_at=None, error={
            "step": step.id, "message": f"step {step.id!r} map_over gives {len(items)} items; "
                                        f"the limit max_width is {step.map_over.max_width}"})
    elif not items:
        state.set(key, StepStatus.SUCCEEDED, wake_at=None, output=[])
    else:
        state.set(key, StepStatus.RUNNING, wake_at=None)
        for index in range(len(items)):
            state.rows.setdefault((step.id, index), StepState(StepStatus.WAITING))


def _wake(state: RunState) -> None:
    """Timers due succeed (or let their step go on); undecided approvals past their timeout
    take their timeout outcome."""
    for key, row in list(state.rows.items()):
        if key[1] != UNMAPPED or row.wake_at is None or row.wake_at > state.now:
            continue
        step = state.spec.step(key[0])
        if row.status is StepStatus.TIMER:
            if step.approval is not None:
                state.set(key, StepStatus.AWAITING_APPROVAL,
                          wake_at=state.now + timedelta(seconds=step.approval.timeout_s))
            elif step.is_task:
                _begin_work(state, key, step)
            else:
                state.set(key, StepStatus.SUCCEEDED, wake_at=None,
                          output={"woke_at": row.wake_at.isoformat()})
        elif row.status is StepStatus.AWAITING_APPROVAL and not row.decided:
            assert step.approval is not None
            outcome = {"decision": step.approval.on_timeout, "timed_out": True}
            if step.approval.on_timeout == "approve" and step.is_task:
                _begin_work(state, key, step)
            elif step.approval.on_timeout == "approve":
                state.set(key, StepStatus.SUCCEEDED, wake_at=None, output=outcome)
            else:
                state.set(key, StepStatus.FAILED, wake_at=None, error={
                    **outcome, "message": f"step {step.id!r} was not approved within "
                                          f"{step.approval.timeout_s:g} s; it timed out rejected"})


def _start_dependents(state: RunState) -> None:
    """Waiting steps whose dependencies all finished: cancelled after a failed or cancelled
    dependency, skipped when their condition is false, started otherwise."""
    spec = state.spec
    for step in spec.steps:
        key = (step.id, UNMAPPED)
        if step.id in spec.compensation_ids or state.rows[key].status is not StepStatus.WAITING:
            continue
        deps = {dep: state.rows[(dep, UNMAPPED)].status for dep in step.depends_on}
        if not all(status in FINISHED for status in deps.values()):
            continue
        broken = next((dep for dep, s in deps.items()
                       if s in (StepStatus.FAILED, StepStatus.CANCELLED)), None)
        if broken is not None:
            state.set(key, StepStatus.CANCELLED, error={
                "message": f"dependency {broken!r} {deps[broken].value}", "step": step.id})
            continue
        try:
            holds = step.condition is None or condition_holds(step.condition, state.context())
        except _bad_expression() as exc:
            state.set(key, StepStatus.FAILED, error={
                "step": step.id, "message": f"step {step.id!r} condition failed: {exc}"})
            continue
        if holds:
            _begin(state, key, step)
        else:
            state.set(key, StepStatus.SKIPPED)


def _fail_fast(state: RunState) -> None:
    """Under fail_fast, once a step failed, every step not yet started is cancelled."""
    spec = state.spec
    failed = _first_failure(state)
    if spec.failure_policy != "fail_fast" or failed is None:
        return
    for key, row in state.rows.items():
        if key[0] in spec.compensation_ids:
            continue
        if row.status in NOT_STARTED or (row.status is StepStatus.READY and not row.task_id):
            state.set(key, StepStatus.CANCELLED, wake_at=None, error={
                "message": f"cancelled: step {failed[0]!r} failed"})


def _fan_in(state: RunState) -> None:
    """A fan-out step succeeds with its items' outputs in order once all succeeded, fails when
    one failed (its items not started are cancelled), is cancelled when they all were."""
    for step in state.spec.steps:
        key = (step.id, UNMAPPED)
        if step.map_over is None or state.rows[key].status is not StepStatus.RUNNING:
            continue
        items = [(k, state.rows[k]) for k in state.items(step.id)]
        failed = next(((k, row) for k, row in items if row.status is StepStatus.FAILED), None)
        if failed is not None:
            state.set(key, StepStatus.FAILED, error={
                "step": step.id, "map_index": failed[0][1], "error": failed[1].error,
                "message": f"item {failed[0][1]} of step {step.id!r} failed"})
            for item_key, row in items:
                if row.status is StepStatus.WAITING or (row.status is StepStatus.READY
                                                        and not row.task_id):
                    state.set(item_key, StepStatus.CANCELLED)
        elif all(row.status is StepStatus.SUCCEEDED for _, row in items):
            state.set(key, StepStatus.SUCCEEDED, output=[row.output for _, row in items])
        elif all(row.status in FINISHED for _, row in items):
            state.set(key, StepStatus.CANCELLED)


def _release_items(state: RunState) -> None:
    """Items of a running fan-out become ready, in order, while fewer than `parallelism` are
    ready or running."""
    for step in state.spec.steps:
        key = (step.id, UNMAPPED)
        if step.map_over is None or state.rows[key].status is not StepStatus.RUNNING:
            continue
        items = state.items(step.id)
        active = sum(state.rows[k].status in (StepStatus.READY, StepStatus.RUNNING) for k in items)
        for item_key in items:
            if active >= step.map_over.parallelism:
                break
            if state.rows[item_key].status is StepStatus.WAITING:
                state.set(item_key, StepStatus.READY)
                active += 1


def _compensations(state: RunState) -> list[str]:
    """The compensation steps due: those of the succeeded steps, latest completion first."""
    spec = state.spec
    done = [(row.order[0], row.order[1] or _EARLIEST, row.order[2], position, step.compensate)
            for position, step in enumerate(spec.steps) if step.compensate
            for row in [state.rows[(step.id, UNMAPPED)]] if row.status is StepStatus.SUCCEEDED]
    return [entry[4] for entry in sorted(done, reverse=True)]


def _compensate(state: RunState) -> None:
    """Once a failed run has nothing else running, start its next compensation step."""
    spec = state.spec
    if _first_failure(state) is None or not all(
            row.status in FINISHED for key, row in state.rows.items()
            if key[0] not in spec.compensation_ids):
        return
    for step_id in _compensations(state):
        row = state.rows[(step_id, UNMAPPED)]
        if row.status in FINISHED:
            continue
        if row.status is StepStatus.WAITING:
            _begin(state, (step_id, UNMAPPED), spec.step(step_id))
        return


def _render(state: RunState, make_request: MakeRequest) -> None:
    """Build the task of every ready row without one; a payload that cannot be built fails it."""
    for key, row in list(state.rows.items()):
        if row.status is not StepStatus.READY or row.task_id or key in state.requests:
            continue
        try:
            state.requests[key] = make_request(key)
        except _bad_expression() as exc:
            state.set(key, StepStatus.FAILED, error={
                "step": key[0], "message": f"step {key[0]!r} payload failed: {exc}"})
