"""Crash injection for workflow runs, without a cluster: the orchestrator's process "dies" at
every write the workflow engine makes, and a new orchestrator on the same database and replicas
takes over. Whatever the crash point, the run finishes succeeded, and no step is lost or run
twice.

A write is one of the engine's durable actions: storing a run (`create_run`), storing step
changes and links together with the run's status (`apply_plan`), stopping a run (`stop_run`),
recording a decision (`record_approval`), and submitting steps' tasks (the admission call). The process dies
either just before the n-th write (it never happens) or just after it committed (its caller
never learns), for every n of a run. From the crash on, the dying incarnation's engine writes
and wakes nothing; its task machinery is stopped between two transactions (see
`between_transactions`); a client whose call died retries it on the next incarnation, as a real
client does (the run's submission carries an idempotency key). Each run is checked for one task
per step, no attempt after a task succeeded, each row started and succeeded once, and its
fan-out within its parallelism. The real-cluster version, with SIGKILL and PostgreSQL, is
test_workflow_failures_on_cluster.py.

Cancelling a run is crashed the same way at each of its writes, and a wait that fell due while
no orchestrator ran is applied when the next one resumes the run.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from actors import workflow_engine
from actors.config import OrchestratorConfig, PoolConfig
from actors.orchestrator import Orchestrator
from storage.database import migrate_async
from storage.errors import Conflict
from storage.messages import AttemptOutcome, Task, TaskStatus, as_utc, utcnow
from storage.workflow_records import RunDetail
from tests.support.inprocess_backend import InProcessBackend
from tests.support.inprocess_platform import config_for_tests, vanish
from tests.support.workflow_documents import CRASHY_INPUT_BASE, crashy

POOLS = {"sleeper": PoolConfig(replicas=2, concurrency=8)}
STORE_WRITES = ("create_run", "apply_plan", "record_approval", "stop_run")
RUN_TIMEOUT_S = 8.0

ITEMS = ["ant", "bee", "cat"]
PARALLELISM = 2
INPUT = {"items": ITEMS, **CRASHY_INPUT_BASE}
DOCUMENT = crashy("crashy", parallelism=PARALLELISM)
EXPECTED_STEPS = {"list": "succeeded", "each": "succeeded", "each[0]": "succeeded",
                  "each[1]": "succeeded", "each[2]": "succeeded", "never": "skipped",
                  "maybe": "succeeded", "approve": "succeeded", "final": "succeeded"}
TASK_STEPS = {"list", "each[0]", "each[1]", "each[2]", "maybe", "final"}


class Crash(Exception):
    """The orchestrator's process died here."""


class RunStalled(AssertionError):
    """The run did not finish in time (a lost step, or a run nothing advances)."""


@dataclass
class Injector:
    """Counts the engine's writes of one scenario across incarnations and kills the current
    incarnation at each write number in `crash_at` (1-based) and at the write `crash_on`
    names (kind, n-th of that kind), before it or `after` it committed."""

    crash_at: frozenset[int] = frozenset()
    after: bool = False
    crash_on: tuple[str, int] | None = None  # also crash at the n-th write of this kind
    writes: list[str] = field(default_factory=list)
    crashes: int = 0


class Incarnation:
    """One orchestrator process. Its engine's writes go through the harness's injector from
    the moment the engine starts (its first sweep resumes runs at once)."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.dead = False
        self.orchestrator = Orchestrator(harness.config, backend=harness.backend)
        engine = self.orchestrator.workflows
        start = engine.start

        def start_wrapped(*args: Any) -> None:
            start(*args)
            for name in STORE_WRITES:
                setattr(engine.store, name, self._wrapped(name, getattr(engine.store, name)))
            engine._submit = self._wrapped("submit", engine._submit)
            engine._cancel_task = self._wrapped("cancel_task", engine._cancel_task)

        setattr(engine, "start", start_wrapped)

    def _wrapped(self, name: str, write: Callable[..., Any] | None) -> Callable[..., Any]:
        assert write is not None

        @functools.wraps(write)
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise Crash(f"{name} on a dead orchestrator")
            injector = self.harness.injector
            injector.writes.append(name)
            number = len(injector.writes)
            here = number in injector.crash_at or injector.crash_on == (
                name, injector.writes.count(name))
            if here and not injector.after:
                self._die(f"before write {number} ({name})")
            result = await write(*args, **kwargs)
            if here:
                self._die(f"after write {number} ({name})")
            if self.dead:  # died while this write was in flight: nobody goes on
                raise Crash(f"{name} finished on a dead orchestrator")
            return result

        return wrapped

    def _die(self, where: str) -> None:
        self.harness.injector.crashes += 1
        self.freeze()
        raise Crash(where)

    def freeze(self) -> None:
        """Dead: its engine writes nothing and wakes nothing from now on."""
        self.dead = True
        engine = self.orchestrator.workflows
        for timer in engine._timers.values():
            timer.cancel()
        for method in ("poke", "_wake"):
            setattr(engine, method, lambda *args: None)
        self.harness.died.set()


class Harness:
    """The incarnations of one test's orchestrator, on one database and one set of replicas;
    `injector` is the current scenario's."""

    def __init__(self, config: OrchestratorConfig) -> None:
        self.config = config
        self.backend = InProcessBackend()
        self.injector = Injector()
        self.died = asyncio.Event()
        self.current: Incarnation | None = None

    @property
    def orchestrator(self) -> Orchestrator:
        assert self.current is not None
        return self.current.orchestrator

    async def start(self) -> Orchestrator:
        self.current = Incarnation(self)
        await asyncio.wait_for(self.orchestrator.ready(), 10)
        return self.orchestrator

    def kill(self) -> None:
        """The current incarnation dies now (it writes nothing more)."""
        assert self.current is not None
        self.current.freeze()

    async def restart(self) -> Orchestrator:
        """Stop the dead incarnation between two of its transactions and start the next."""
        old = self.orchestrator
        await between_transactions(old)
        await vanish(old)
        self.died.clear()
        return await self.start()

    async def stop(self) -> None:
        if self.current is not None:
            await self.orchestrator.drain(1)
            await vanish(self.orchestrator)


def label(step_id: str, map_index: int) -> str:
    return step_id if map_index < 0 else f"{step_id}[{map_index}]"


def statuses(detail: RunDetail) -> dict[str, str]:
    return {label(s.step_id, s.map_index): s.status.value for s in detail.steps}


class Executions:
    """Every attempt the replicas were asked to run, as (task id, attempt number, when)."""

    def __init__(self, backend: InProcessBackend) -> None:
        self.seen: list[tuple[str, int, datetime]] = []
        call = backend.call

        def counting(handle: Any, method: str, *args: Any, **kwargs: Any) -> Any:
            if method == "run_many":
                self.seen.extend((task.task_id, task.attempt, utcnow()) for task in args[0])
            return call(handle, method, *args, **kwargs)

        setattr(backend, "call", counting)


async def between_transactions(orchestrator: Orchestrator, timeout_s: float = 5.0) -> None:
    """Return once none of the orchestrator's database transactions is open (the caller stops
    it before anything else runs, so the process dies between transactions).

    A process killed mid-transaction loses that transaction and its locks with it, so this
    chooses among crash moments of a real process. Stopping coroutines in the middle of one
    instead can leave SQLite's write lock with a connection nobody closes, and the next
    incarnation then cannot write at all."""
    assert orchestrator.lifecycle is not None
    pool: Any = orchestrator.lifecycle.store.engine.pool  # a QueuePool: it counts checkouts
    deadline = time.monotonic() + timeout_s
    while pool.checkedout():
        if time.monotonic() > deadline:
            raise AssertionError(f"a transaction stayed open {timeout_s}s: {pool.status()}")
        await asyncio.sleep(0.001)


async def drive(harness: Harness, key: str) -> RunDetail:
    """Submit the run, approve its approval when it asks, restart the orchestrator whenever it
    died and retry what the dead one was asked; returns the finished run."""
    orchestrator = harness.orchestrator
    run_id = None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if run_id is None:
                run_id = (await orchestrator.submit_workflow(
                    DOCUMENT, INPUT, idempotency_key=key)).run.id
            detail = await orchestrator.get_run(run_id)
            if detail.run.status.is_finished:
                return detail
            if statuses(detail)["approve"] == "awaiting_approval":
                try:
                    await orchestrator.decide(run_id, "approve", "approve", "user:ann", "go")
                except Conflict:
                    pass  # decided already: the earlier call committed before its process died
            else:
                try:
                    await asyncio.wait_for(harness.died.wait(), 0.02)
                except asyncio.TimeoutError:
                    pass
        except Crash:
            pass
        assert harness.current is not None
        if harness.current.dead:
            orchestrator = await harness.restart()
    injector = harness.injector
    raise RunStalled(f"the run did not finish within {RUN_TIMEOUT_S}s; engine writes "
                     f"{injector.writes}; steps "
                     f"{statuses(await orchestrator.get_run(run_id)) if run_id else None}")


async def problems(orchestrator: Orchestrator, detail: RunDetail,
                   executions: Executions) -> list[str]:
    """What is wrong with a finished run: a step lost, a step with two tasks, a succeeded step
    run again, a wrong output."""
    found = []
    run_id = detail.run.id
    if detail.run.status.value != "succeeded":
        found.append(f"run {detail.run.status.value}: {detail.run.error}")
    if statuses(detail) != EXPECTED_STEPS:
        found.append(f"steps {statuses(detail)}")
    final = next(s for s in detail.steps if s.step_id == "final")
    if final.output is None or final.output.get("echo") != [ITEMS, None, "tagged"]:
        found.append(f"final output {final.output}")
    approve = next(s for s in detail.steps if s.step_id == "approve")
    if approve.decided_by != "user:ann":
        found.append(f"approval decided by {approve.decided_by}")

    by_step = await run_tasks(orchestrator, run_id)
    if set(by_step) != TASK_STEPS:
        found.append(f"tasks for steps {sorted(by_step)}, expected {sorted(TASK_STEPS)}")
    for step_label, step_tasks in sorted(by_step.items()):
        if len(step_tasks) != 1:
            found.append(f"step {step_label} has {len(step_tasks)} tasks")
    rows = {label(s.step_id, s.map_index): s for s in detail.steps}
    for step_label, step_tasks in by_step.items():
        row = rows.get(step_label)
        if row is not None and row.task_id not in [t.id for t in step_tasks]:
            found.append(f"step {step_label} links task {row.task_id}, not its own task")
        for task in step_tasks:
            found.extend(await _attempt_problems(orchestrator, step_label, task.id, executions))

    events = await orchestrator.run_events(run_id)
    for kind in ("step_running", "step_succeeded"):
        counted = collections.Counter(
            label(e.step_id or "", -1 if e.map_index is None else e.map_index)
            for e in events if e.kind == kind)
        twice = sorted(step for step, n in counted.items() if n > 1)
        if twice:
            found.append(f"{kind} more than once for {twice}")
    going: set[int] = set()  # the fan-out's items ready or running, replayed
    for event in events:
        if event.step_id == "each" and event.map_index is not None and event.map_index >= 0:
            if event.kind in ("step_ready", "step_running"):
                going.add(event.map_index)
            elif event.kind in ("step_succeeded", "step_failed", "step_cancelled"):
                going.discard(event.map_index)
            if len(going) > PARALLELISM:
                found.append(f"items {sorted(going)} of the fan-out at once")
                break
    return found


async def run_tasks(orchestrator: Orchestrator, run_id: str) -> dict[str, list[Task]]:
    """The tasks of a run's steps, found by their idempotency keys `wf:<run>:<step>:<item>`,
    by step row."""
    found: dict[str, list[Task]] = collections.defaultdict(list)
    cursor = None
    while True:
        page = await orchestrator.list_tasks(limit=1000, cursor=cursor)
        for task in page.tasks:
            key = task.idempotency_key or ""
            if key.startswith(f"wf:{run_id}:"):
                _, _, step_id, index = key.split(":")[:4]
                found[label(step_id, int(index))].append(task)
        cursor = page.next_cursor
        if cursor is None:
            return found


async def _attempt_problems(orchestrator: Orchestrator, step_label: str, task_id: str,
                            executions: Executions) -> list[str]:
    """A step's task may run again after its attempt was lost with its process (even under the
    same attempt number, when the attempt's start had not been committed yet), but it succeeds
    once and nothing of it runs after it succeeded."""
    found = []
    task = await orchestrator.get(task_id)
    if task.status is not TaskStatus.SUCCEEDED or task.finished_at is None:
        return [f"task of {step_label} is {task.status.value}"]
    attempts = await orchestrator.attempts(task_id)
    succeeded = [a.number for a in attempts if a.outcome is AttemptOutcome.SUCCEEDED]
    if len(succeeded) != 1 or succeeded[0] != task.attempts:
        found.append(f"task of {step_label} succeeded on attempts {succeeded} of {task.attempts}")
    ran = [(attempt, at) for seen_id, attempt, at in executions.seen if seen_id == task_id]
    if not ran:
        found.append(f"task of {step_label} never ran")
    late = [attempt for attempt, at in ran if at > as_utc(task.finished_at)]
    if late:
        found.append(f"task of {step_label} ran attempts {late} after it succeeded")
    return found


async def scenario(harness: Harness, executions: Executions, injector: Injector,
                   key: str) -> list[str]:
    harness.injector = injector
    try:
        detail = await drive(harness, key)
    except RunStalled as exc:
        return [str(exc)]
    found = await problems(harness.orchestrator, detail, executions)
    if injector.crashes != len(injector.crash_at):  # scenarios crash by number only
        found.append(f"{injector.crashes} of the {len(injector.crash_at)} crashes happened")
    return found


async def crash_everywhere(tmp_path, after: bool, then_at: int | None = None) -> None:
    """A clean run counts the engine's writes; then one run per write crashes there (and
    again `then_at` writes later, when given)."""
    url = f"sqlite:///{tmp_path}/ymera.db"
    await migrate_async(url)
    harness = Harness(config_for_tests(url, pools=POOLS))
    executions = Executions(harness.backend)
    failures = {}
    await harness.start()
    try:
        clean = Injector()
        found = await scenario(harness, executions, clean, "clean")
        assert found == [], found
        assert {"create_run", "apply_plan", "record_approval",
                "submit"} <= set(clean.writes), clean.writes
        for crash_at in range(1, len(clean.writes) + 1):
            points = {crash_at} if then_at is None else {crash_at, crash_at + then_at}
            if max(points) > len(clean.writes):
                continue
            found = await scenario(harness, executions, Injector(frozenset(points), after),
                                   f"crash-{crash_at}")
            if found:
                where = ", ".join(f"{n} ({clean.writes[n - 1]})" for n in sorted(points))
                failures[f"{'after' if after else 'before'} writes {where}"] = found
    finally:
        await harness.stop()
    assert not failures, "\n".join(f"{where}: {found}" for where, found in failures.items())


@pytest.fixture
def quick_sweep(monkeypatch):
    """The engine's periodic sweep every 0.5 s: a run that only the sweep resumes finishes
    within a scenario (still a lost step if it never does). Resuming at once without the sweep
    is checked on its own below."""
    monkeypatch.setattr(workflow_engine, "SWEEP_INTERVAL_S", 0.5)


async def test_a_crash_before_any_engine_write_loses_and_repeats_no_step(tmp_path, quick_sweep):
    await crash_everywhere(tmp_path, after=False)


async def test_a_crash_right_after_any_engine_write_loses_and_repeats_no_step(
        tmp_path, quick_sweep):
    await crash_everywhere(tmp_path, after=True)


async def test_a_second_crash_while_resuming_loses_and_repeats_no_step(tmp_path, quick_sweep):
    """The next incarnation dies at its first write too (resuming is a boundary itself)."""
    await crash_everywhere(tmp_path, after=True, then_at=1)


async def test_a_step_whose_task_ended_before_it_was_linked_is_resumed_at_once(harness):
    """The process died after submitting the fan-out's first tasks and before storing their
    links; the tasks ran to their end meanwhile. The next incarnation gets those tasks back for
    the steps' idempotency keys and must see that they ended, not wait for the periodic sweep
    (every 30 s) to advance the run."""
    harness.injector = Injector(after=True, crash_on=("submit", 2))  # the list's, then these
    orchestrator = harness.orchestrator
    run_id = (await orchestrator.submit_workflow(DOCUMENT, INPUT)).run.id
    await asyncio.wait_for(harness.died.wait(), 5)
    tasks = (await orchestrator.list_tasks(limit=10)).tasks
    assert len(tasks) == 4  # list, each[0], each[1], maybe
    for task in tasks:
        assert (await orchestrator.wait(task.id, 5)).status is TaskStatus.SUCCEEDED

    orchestrator = await harness.restart()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        steps = statuses(await orchestrator.get_run(run_id))
        if steps["approve"] == "awaiting_approval":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the run waits for the sweep: {steps}")

SLOW = {"name": "slow", "steps": [
    {"id": "slow", "agent_type": "sleeper", "payload": {"seconds": 30}},
    {"id": "after", "agent_type": "sleeper", "depends_on": ["slow"], "payload": {"echo": 1}},
]}
CANCEL_WRITES = ("stop_run", "cancel_task")  # in the order cancel makes them


@pytest.fixture
async def harness(tmp_path):
    url = f"sqlite:///{tmp_path}/ymera.db"
    await migrate_async(url)
    harness = Harness(config_for_tests(url, pools=POOLS))
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


async def running_slow_run(harness: Harness) -> tuple[str, str]:
    """A run of SLOW whose first step's task is running: (run id, task id)."""
    orchestrator = harness.orchestrator
    run_id = (await orchestrator.submit_workflow(SLOW, {})).run.id
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        slow = next(s for s in (await orchestrator.get_run(run_id)).steps if s.step_id == "slow")
        if slow.task_id and (await orchestrator.get(slow.task_id)).status is TaskStatus.RUNNING:
            return run_id, slow.task_id
        await asyncio.sleep(0.02)
    raise AssertionError("the first step never ran")


@pytest.mark.parametrize("crash_at, after", [
    pytest.param(1, False, id="before-stop_run"),
    pytest.param(1, True, id="after-stop_run"),
    pytest.param(2, False, id="before-cancel_task"),
    pytest.param(2, True, id="after-cancel_task"),
])
async def test_a_crash_while_cancelling_a_run_still_cancels_it_and_its_running_task(
        harness, crash_at, after):
    run_id, task_id = await running_slow_run(harness)
    harness.injector = injector = Injector(frozenset({crash_at}), after)
    orchestrator = harness.orchestrator
    try:
        await orchestrator.cancel_run(run_id)
        await asyncio.sleep(0.1)  # the task cancellations it started
    except Crash:
        pass
    assert injector.writes[:crash_at] == list(CANCEL_WRITES[:crash_at])
    assert injector.crashes == 1
    orchestrator = await harness.restart()
    try:  # the client whose call died asks again
        await orchestrator.cancel_run(run_id)
    except Conflict as exc:
        assert "already cancelled" in str(exc), exc

    detail = await orchestrator.get_run(run_id)
    assert detail.run.status.value == "cancelled", statuses(detail)
    assert statuses(detail) == {"slow": "cancelled", "after": "cancelled"}
    task = await orchestrator.wait(task_id, 2)
    assert task.status is TaskStatus.CANCELLED, "the cancelled step's task ran on"


async def test_an_approval_timeout_due_while_the_orchestrator_was_down_applies_on_resume(
        harness):
    document = {"name": "late", "steps": [
        {"id": "ok", "approval": {"timeout_s": 0.3, "on_timeout": "approve"}},
        {"id": "pause", "timer": {"wait_s": 0.3}, "depends_on": ["ok"]},
        {"id": "ship", "agent_type": "sleeper", "payload": {"echo": "shipped"},
         "depends_on": ["pause"]},
    ]}
    orchestrator = harness.orchestrator
    run_id = (await orchestrator.submit_workflow(document, {})).run.id
    assert statuses(await orchestrator.get_run(run_id))["ok"] == "awaiting_approval"
    harness.kill()  # with the approval's timeout pending
    await asyncio.sleep(0.5)
    orchestrator = await harness.restart()
    detail = await orchestrator.wait_run(run_id, 10)
    assert detail.run.status.value == "succeeded", statuses(detail)
    assert statuses(detail) == {"ok": "succeeded", "pause": "succeeded", "ship": "succeeded"}
    assert next(s for s in detail.steps if s.step_id == "ok").output["timed_out"] is True
