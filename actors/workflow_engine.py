"""The workflow engine: runs workflow runs forward from storage, inside the orchestrator.

`WorkflowEngine` owns no state that matters: every decision is made from the run's stored rows
and its tasks' stored outcomes by the pure planner (`actors.workflow_advance.plan`), then stored
(compare-and-set) before anything else happens. What it keeps in memory only speeds things up:
which task belongs to which run (to advance a run the moment one of its tasks ends), wake-up
timers, and who waits for a run.

Guarantees:
- A run is created (with its spec, input and first step rows) in one transaction before the
  submitter is answered; the same (tenant, idempotency key) gives the same run.
- Each step's task is submitted through the orchestrator's admission with the key
  `wf:<run>:<step>:<item>` (plus the run's generation after a retry): a crash between storing a
  step as ready and linking its task submits it again under the same key, which returns the same
  task, so a step never runs twice and is never lost. A succeeded step is never changed.
- A run advances when one of its tasks ends, when a timer or approval timeout is due, when a
  person decides, at start (every unfinished run), and in a periodic sweep that catches anything
  missed. Advancing one run is serialized (one lock per run); runs advance concurrently.
- A run past its deadline (created + `max_run_duration_s`) fails: its unfinished steps are
  cancelled and their running tasks cancelled.
- Cancelling a run cancels its unfinished steps and their tasks; it does not run compensation
  (compensation runs when a run fails). Retrying a failed or cancelled run from a step re-runs
  that step, what depends on it and whatever failed or was cancelled; succeeded steps are kept.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any

from actors.config import OrchestratorConfig
from actors.errors import PlatformUnavailable
from actors.metrics import OrchestratorMetrics
from actors.periodic import every
from actors.validation import json_value_problem
from actors.workflow_advance import (
    Plan, TaskOutcome, initial_steps, next_status, plan, retry_set, with_tasks)
from actors.workflow_memory import RunMemory
from actors.workflow_submit import SubmitTasks, submit_steps
from storage.errors import Conflict, InvalidRequest, NotFound, StorageError
from storage.messages import Task, TaskStatus, utcnow
from storage.task_store import TaskStore
from storage.workflow_records import (
    RunDetail, RunEvent, RunPage, RunStatus, StepStatus, WorkflowRun, WorkflowStep)
from storage.workflow_spec import WorkflowSpec, compile_spec, spec_from_json
from storage.workflow_store import WorkflowStore

log = logging.getLogger("ymera.workflows")

SWEEP_INTERVAL_S = 30.0  # every unfinished run is advanced at least this often
GAUGE_INTERVAL_S = 10.0
MAX_ROUNDS = 50  # plans applied in one advance before yielding to other runs
BUSY_RETRY_S = 1.0  # when admission refused a step's task (queue full, draining)
FAILED_RETRY_S = 5.0  # after an advance failed (storage trouble, or a bug)
RECENT_FINISHED = 20_000
_TERMINAL_TASK = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.DEAD,
                            TaskStatus.CANCELLED})

CancelTask = Callable[[str], Awaitable[Any]]
Spawn = Callable[[Coroutine[Any, Any, None], str], asyncio.Task]


class WorkflowEngine:
    """Advances the platform's workflow runs (see the module docstring)."""

    def __init__(self, config: OrchestratorConfig, agent_types: Sequence[str], routing: bool,
                 metrics: OrchestratorMetrics, spawn: Spawn) -> None:
        self.config = config
        self.agent_types = frozenset(agent_types)
        self.routing = routing
        self.metrics = metrics
        self._spawn = spawn
        self.store: WorkflowStore | None = None
        self.tasks: TaskStore | None = None
        self._submit: SubmitTasks | None = None
        self._cancel_task: CancelTask | None = None
        self._specs: dict[str, WorkflowSpec] = {}
        self.memory = RunMemory()
        self._locks: dict[str, asyncio.Lock] = {}
        self._driving: dict[str, list[Any]] = {}  # run id -> [tenant, poked again]
        self._task_runs: dict[str, tuple[str, str]] = {}  # task id -> (tenant, run id)
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._finished: dict[str, asyncio.Event] = {}
        self.gauges: dict[str, Any] = {"by_status": {}, "awaiting_approval": 0, "overdue": 0}

    def start(self, tasks: TaskStore, submit: SubmitTasks, cancel_task: CancelTask) -> None:
        """Begin: open the run store on the task store's engine and start the sweeps (the
        first sweep resumes every unfinished run)."""
        self.tasks = tasks
        self.store = WorkflowStore(tasks.engine)
        self._submit = submit
        self._cancel_task = cancel_task
        self._spawn(self._sweep_forever(), "workflow-sweep")
        self._spawn(every(GAUGE_INTERVAL_S, self._refresh_gauges,
                                "counting workflow runs"), "workflow-gauges")
        self._spawn(every(self.config.workflow_purge_interval_s,
                                lambda: self.purge(None, 500), "purging finished workflow runs",
                                wait_first=True), "workflow-purge")

    # ------------------------------------------------------------------ operations

    async def submit(self, document: dict[str, Any] | str, run_input: Any, *,
                     idempotency_key: str | None, tenant: str,
                     callback_url: str | None = None) -> WorkflowRun:
        """Validate and store a new run, start it, and return it as created (the stored run for
        a known idempotency key). `InvalidRequest` names the step and field; nothing is
        stored."""
        store = self._store()
        spec = compile_spec(document, self.agent_types, self.config.workflow_limits)
        if not self.routing:
            for step in spec.steps:
                if step.is_task and step.agent_type is None:
                    raise InvalidRequest(
                        f"step {step.id!r} names no agent_type and routing is off on this "
                        "platform; name the agent type", {"step": step.id, "field": "agent_type"})
        self._check_input(run_input)
        deadline = utcnow() + timedelta(seconds=spec.limits.max_run_duration_s)
        run, created = await store.create_run(
            tenant, spec.name, spec.version, spec.to_json(), run_input, idempotency_key,
            initial_steps(spec), deadline_at=deadline, callback_url=callback_url)
        if created:
            self._specs[run.id] = spec
            self.metrics.workflow_started(spec.name, tenant)
            log.info("workflow run %s (%s v%s) created", run.id, spec.name, spec.version,
                     extra={"run_id": run.id, "tenant": tenant})
        await self.advance(tenant, run.id)
        return run

    def _check_input(self, run_input: Any) -> None:
        problem = json_value_problem(run_input, self.config, "input")
        if problem is not None:
            raise InvalidRequest(f"workflow input {problem[0]}", {"field": "input", **problem[1]})

    async def detail(self, tenant: str, run_id: str) -> RunDetail:
        store = self._store()
        run = await store.run(tenant, run_id)
        return RunDetail(run, tuple(await store.steps(tenant, run_id)))

    async def wait(self, tenant: str, run_id: str, timeout_s: float | None) -> RunDetail:
        """The run once finished, or as it stands when `timeout_s` runs out."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            detail = await self.detail(tenant, run_id)
            if detail.run.status.is_finished:
                return detail
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return detail
            event = self._finished.setdefault(run_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), 1.0 if left is None else min(left, 1.0))
            except asyncio.TimeoutError:
                pass

    async def page(self, tenant: str, status: str | None, limit: int,
                   cursor: str | None) -> RunPage:
        runs, next_cursor = await self._store().list_runs(tenant, status, limit, cursor)
        return RunPage(tuple(runs), next_cursor)

    async def events(self, tenant: str, run_id: str, after_id: int) -> list[RunEvent]:
        return await self._store().run_events(tenant, run_id, after_id)

    async def decide(self, tenant: str, run_id: str, step_id: str, decision: str, actor: str,
                     comment: str | None, map_index: int) -> RunDetail:
        """Record a person's decision on a step awaiting approval and advance the run."""
        async with self._lock(run_id):  # not in the middle of a plan made before it
            try:
                await self._store().record_approval(tenant, run_id, step_id, decision, actor,
                                                    comment, map_index)
            finally:
                self.memory.forget(run_id)
        await self.advance(tenant, run_id)
        return await self.detail(tenant, run_id)

    async def cancel(self, tenant: str, run_id: str) -> RunDetail:
        """Cancel the run's unfinished steps and their tasks, then the run (`Conflict` when
        it finished already)."""
        store = self._store()
        async with self._lock(run_id):
            run, tasks = await store.stop_run(tenant, run_id, RunStatus.CANCELLED,
                                              {"message": "cancelled by request"})
            self._cancel_tasks(tasks)
            self._count_end(run)
        return await self.detail(tenant, run_id)

    async def retry(self, tenant: str, run_id: str, from_step: str) -> RunDetail:
        """Re-run `from_step`, what depends on it, and whatever failed or was cancelled, in the
        run's next generation; succeeded steps outside that set are kept."""
        store = self._store()
        async with self._lock(run_id):
            run = await store.run(tenant, run_id)
            spec = self._spec(run)
            try:
                spec.step(from_step)
            except KeyError:
                raise NotFound(f"workflow run {run_id!r} has no step {from_step!r}",
                               {"run_id": run_id, "step_id": from_step}) from None
            if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
                raise Conflict(f"workflow run {run_id!r} is {run.status.value}; only a failed "
                               "or cancelled run can be retried",
                               {"run_id": run_id, "status": run.status.value})
            steps = await store.steps(tenant, run_id)
            reset = retry_set(spec, steps, from_step)
            try:
                await store.reopen(tenant, run_id, sorted(reset),
                                   {"from_step": from_step, "steps": sorted(reset)})
            finally:
                self.memory.forget(run_id)
            self._finished.pop(run_id, None)
            self.metrics.workflow_started(spec.name, tenant)
        await self.advance(tenant, run_id)
        return await self.detail(tenant, run_id)

    async def purge(self, older_than_s: float | None, batch_size: int) -> int:
        """Delete the runs that finished more than `older_than_s` ago (the configured
        retention by default), in batches; returns how many went."""
        keep_s = self.config.workflow_retention_s if older_than_s is None else older_than_s
        if keep_s < 0:
            raise InvalidRequest(f"older_than_s must be 0 or more, not {keep_s}",
                                 {"field": "older_than_s"})
        purged = await self._store().purge_finished(utcnow() - timedelta(seconds=keep_s),
                                                    batch_size)
        if purged:
            log.info("purged %d finished workflow runs", purged)
        return purged

    # ------------------------------------------------------------------ advancing

    def task_finished(self, task_id: str) -> None:
        """The orchestrator's hook: a task reached a final status (its outcome is stored)."""
        self._recent[task_id] = None
        if len(self._recent) > RECENT_FINISHED:
            self._recent.popitem(last=False)
        owner = self._task_runs.pop(task_id, None)
        if owner is not None:
            self.poke(*owner)

    def poke(self, tenant: str, run_id: str) -> None:
        """Advance the run soon (once more if it is being advanced now). Before `start`,
        nothing: the first sweep advances every unfinished run."""
        if self.store is None:
            return
        driving = self._driving.get(run_id)
        if driving is not None:
            driving[1] = True
            return
        self._driving[run_id] = [tenant, False]
        self._spawn(self._drive(run_id), f"workflow-{run_id}")

    async def _drive(self, run_id: str) -> None:
        state = self._driving[run_id]
        try:
            while True:
                state[1] = False
                try:
                    await self.advance(state[0], run_id)
                except (StorageError, PlatformUnavailable) as exc:
                    log.warning("cannot advance workflow run %s now (%s); retrying", run_id, exc)
                    self._wake(state[0], run_id, FAILED_RETRY_S)
                    return
                except Exception:
                    log.exception("advancing workflow run %s failed; trying again in %.0f s",
                                  run_id, FAILED_RETRY_S)
                    self._wake(state[0], run_id, FAILED_RETRY_S)
                    return
                if not state[1]:
                    return
        finally:
            del self._driving[run_id]

    async def advance(self, tenant: str, run_id: str) -> None:
        """Plan and apply until the run has nothing more to do now."""
        async with self._lock(run_id):
            for _ in range(MAX_ROUNDS):
                if not await self._advance_once(tenant, run_id):
                    return
            self.poke(tenant, run_id)  # a long run of plans: let other runs in, then go on

    async def _advance_once(self, tenant: str, run_id: str) -> bool:
        """One plan applied. A plan reaches a fixed point, so one is enough, except when it
        only added the rows a run lacked, a step's task was refused, or a task came back that
        was submitted before a crash and may have ended (True: plan again)."""
        store = self._store()
        run = await self.memory.run(self._store(), tenant, run_id)
        if run.status.is_finished:
            self._ended(run)
            return False
        spec = self._spec(run)
        rows = await self.memory.rows(self._store(), tenant, run_id)
        steps = list(rows.values())
        now = utcnow()
        if run.deadline_at is not None and now >= run.deadline_at:
            await self._overdue(run, spec)
            return False
        outcomes = await self._outcomes(tenant, run_id, spec, steps)
        next_plan = plan(spec, run.input, steps, outcomes, now, tenant=tenant, run_id=run_id,
                         generation=run.generation)
        # Tasks first, rows after: a crash in between submits the same tasks again under the
        # same idempotency keys and gets them back, so nothing runs twice and nothing is lost.
        assert self._submit is not None
        submitted, busy, existed = await submit_steps(self._submit, next_plan.submissions)
        changes = with_tasks(next_plan, submitted)
        status = next_status(run, next_plan, busy)
        if changes or next_plan.new_steps or status is not None:
            error = next_plan.error if status is not None and status.is_finished else None
            applied, changed = await store.apply_plan(run_id, changes, next_plan.new_steps,
                                                      status, error)
            if len(applied) == len(changes):
                self.memory.remember(run_id, applied, next_plan.new_steps)
            else:  # someone else moved a row: read them all again next time
                self.memory.forget(run_id)
            if changed:
                assert status is not None
                self._status_changed(run, status, error)
        for outcome in submitted.values():
            if isinstance(outcome, str):
                self._watch(tenant, run_id, outcome)
        self._schedule(tenant, run, next_plan)
        if busy:
            self._wake(tenant, run_id, BUSY_RETRY_S)
        refused = any(not isinstance(outcome, str) for outcome in submitted.values())
        return refused or existed or (bool(next_plan.new_steps) and not next_plan.changes
                                      and not submitted)

    async def _outcomes(self, tenant: str, run_id: str, spec: WorkflowSpec,
                        steps: Sequence[WorkflowStep]) -> dict[str, TaskOutcome]:
        """How the tasks of the run's ready and running steps ended; the ones still going are
        watched, so their end advances the run."""
        assert self.tasks is not None
        ids = [s.task_id for s in steps if s.task_id is not None
               and s.status in (StepStatus.READY, StepStatus.RUNNING)]
        if not ids:
            return {}
        found = await self.tasks.get_tasks(ids)
        outcomes = {}
        for task_id in ids:
            task = found.get(task_id)
            if task is None:
                continue
            if task.status in _TERMINAL_TASK:
                outcomes[task_id] = TaskOutcome(task.status, task.result,
                                                task.error.to_json() if task.error else None)
                self._observe_wait(spec, task)
            else:
                self._watch(tenant, run_id, task_id)
        return outcomes

    def _observe_wait(self, spec: WorkflowSpec, task: Task) -> None:
        if task.finished_at is not None:
            waited = (task.finished_at - task.created_at).total_seconds() - task.wall_s
            self.metrics.workflow_step_waited(spec.name, max(waited, 0.0))

    def _watch(self, tenant: str, run_id: str, task_id: str) -> None:
        self._task_runs[task_id] = (tenant, run_id)
        if task_id in self._recent:  # ended while it was being linked
            self._task_runs.pop(task_id, None)
            self.poke(tenant, run_id)

    def _status_changed(self, run: WorkflowRun, status: RunStatus, error: Any) -> None:
        now = utcnow()
        updated = dataclasses.replace(run, status=status, updated_at=now, error=error,
                                      finished_at=now if status.is_finished else None)
        if status.is_finished:
            self._count_end(updated)
        elif status is RunStatus.WAITING:  # for a person or a timer: keep nothing meanwhile
            self.memory.forget(run.id)
        else:
            self.memory.runs[run.id] = updated

    def _schedule(self, tenant: str, run: WorkflowRun, next_plan: Plan) -> None:
        """Wake the run at its next timer or approval timeout, or at its deadline."""
        if next_plan.run_status.is_finished:
            return
        moments = [m for m in (next_plan.wake_at, run.deadline_at) if m is not None]
        if moments:
            delay = (min(moments) - utcnow()).total_seconds()
            self._wake(tenant, run.id, max(delay, 0.0) + 0.01)

    def _wake(self, tenant: str, run_id: str, delay_s: float) -> None:
        old = self._timers.pop(run_id, None)
        if old is not None:
            old.cancel()
        delay_s = min(delay_s, SWEEP_INTERVAL_S * 100)  # far wakes: the sweep covers them
        self._timers[run_id] = asyncio.get_running_loop().call_later(
            delay_s, self._timer_fired, tenant, run_id)

    def _timer_fired(self, tenant: str, run_id: str) -> None:
        self._timers.pop(run_id, None)
        self.poke(tenant, run_id)

    async def _overdue(self, run: WorkflowRun, spec: WorkflowSpec) -> None:
        limit = spec.limits.max_run_duration_s
        try:
            updated, tasks = await self._store().stop_run(run.tenant, run.id, RunStatus.FAILED, {
                "code": "run_deadline", "message": f"the run did not finish within its "
                f"max_run_duration_s of {limit:g} s"})
        except Conflict:
            return  # it finished meanwhile
        log.warning("workflow run %s failed: past its deadline", run.id,
                    extra={"run_id": run.id, "tenant": run.tenant})
        self._cancel_tasks(tasks)
        self._count_end(updated)

    def _cancel_tasks(self, task_ids: Sequence[str]) -> None:
        """Cancel the tasks of a stopped run's steps (in the background: a task that ended
        meanwhile is left as it ended)."""
        for task_id in task_ids:
            self._task_runs.pop(task_id, None)
            self._spawn(self._cancel_quietly(task_id), f"cancel-{task_id}")

    async def _cancel_quietly(self, task_id: str) -> None:
        assert self._cancel_task is not None
        try:
            await self._cancel_task(task_id)
        except Conflict:
            pass  # it ended meanwhile
        except Exception as exc:
            log.warning("cannot cancel task %s of a stopped workflow run (%s)", task_id, exc)

    def _ended(self, run: WorkflowRun) -> None:
        """Tell those waiting for the run, and forget what was kept for it."""
        event = self._finished.pop(run.id, None)
        if event is not None:
            event.set()
        timer = self._timers.pop(run.id, None)
        if timer is not None:
            timer.cancel()
        self._specs.pop(run.id, None)
        self.memory.forget(run.id)

    def _count_end(self, run: WorkflowRun) -> None:
        """Count a run this engine just finished (once: only the writer of the change)."""
        finished = run.finished_at or utcnow()
        self.metrics.workflow_finished(run.name, run.tenant, run.status.value,
                                       (finished - run.created_at).total_seconds())
        self._ended(run)

    # ------------------------------------------------------------------ background

    async def _sweep_forever(self) -> None:
        """Advance every unfinished run now (the resume after a restart), then every
        `SWEEP_INTERVAL_S`."""
        first = True
        while True:
            try:
                if first:  # a stop just before the last crash may have left its tasks going
                    self._cancel_tasks(await self._store().stopped_step_tasks())
                await self.sweep()
                first = False
            except Exception as exc:
                log.warning("workflow sweep failed (%s)", exc)
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def sweep(self) -> int:
        """Poke every unfinished run; returns how many."""
        store = self._store()
        for run_id in [r for r, lock in self._locks.items()
                       if not lock.locked() and r not in self._driving]:
            del self._locks[run_id]
        cursor, count = None, 0
        while True:
            runs, cursor = await store.runs_to_advance(500, cursor)
            for run in runs:
                self.poke(run.tenant, run.id)
            count += len(runs)
            if cursor is None:
                return count

    async def _refresh_gauges(self) -> None:
        self.gauges = await self._store().gauges(utcnow())

    # ------------------------------------------------------------------ helpers

    def _store(self) -> WorkflowStore:
        if self.store is None:
            raise PlatformUnavailable("the workflow engine is still starting")
        return self.store

    def _spec(self, run: WorkflowRun) -> WorkflowSpec:
        spec = self._specs.get(run.id)
        if spec is None:
            spec = self._specs[run.id] = spec_from_json(run.spec)
        return spec

    def _lock(self, run_id: str) -> asyncio.Lock:
        lock = self._locks.get(run_id)
        if lock is None:
            lock = self._locks[run_id] = asyncio.Lock()
        return lock

