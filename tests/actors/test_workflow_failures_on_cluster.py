"""Workflow runs surviving failures on a real cluster with PostgreSQL: the orchestrator killed
with SIGKILL at the boundaries of a run with a fan-out, a condition and an approval; a
1,000-wide fan-out held to its parallelism; a run cancelled mid-way.

Killing the orchestrator actor is not restarting Ray: Ray restarts the actor, which resumes
every unfinished run from storage. The exhaustive crash injection (every write of the engine)
runs in-process in test_workflow_crashes.py.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import ray

from actors.errors import PlatformUnavailable
from cluster.client import Client
from storage.messages import AttemptOutcome, Task, TaskStatus
from storage.workflow_records import RunDetail, RunEvent
from tests.support.platform import wait_until
from tests.support.workflow_documents import CRASHY_INPUT_BASE, crashy

pytestmark = pytest.mark.cluster

ITEMS = ["ant", "bee", "cat", "dog", "eel"]
CRASHY = crashy("crashy-on-cluster", list_s=1.5, item_s=0.6, final_s=0.5)
CRASHY_INPUT = {"items": ITEMS, **CRASHY_INPUT_BASE}


def label(step_id: str, map_index: int | None) -> str:
    return step_id if map_index is None or map_index < 0 else f"{step_id}[{map_index}]"


def statuses(detail: RunDetail) -> dict[str, str]:
    return {label(s.step_id, s.map_index): s.status.value for s in detail.steps}


def retried(call: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """`call()`, again while the orchestrator restarts (`PlatformUnavailable`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except PlatformUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def orchestrator_pid(client: Client) -> int | None:
    try:
        return ray.get(client.orchestrator.pid.remote(), timeout=30)
    except (ray.exceptions.RayError, PlatformUnavailable):
        return None  # dead or restarting


def kill_orchestrator(client: Client) -> int:
    """SIGKILL the orchestrator's process; return the pid of its next incarnation once that
    answers."""
    old_pid = orchestrator_pid(client)
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    return wait_until(lambda: (lambda pid: pid if pid not in (None, old_pid) else None)(
        orchestrator_pid(client)), 60, what="the orchestrator to come back")


def run_until(client: Client, run_id: str, predicate: Callable[[dict[str, str]], bool],
              what: str, timeout_s: float = 60.0) -> RunDetail:
    """The run once `predicate` holds for its step statuses (with "run" for the run's)."""
    def reached() -> RunDetail | None:
        detail = retried(lambda: client.get_run(run_id))
        return detail if predicate({**statuses(detail), "run": detail.run.status.value}) else None

    return wait_until(reached, timeout_s, 0.05, what)


def all_events(client: Client, run_id: str) -> list[RunEvent]:
    events: list[RunEvent] = []
    while True:
        page = retried(lambda: client.run_events(run_id, events[-1].id if events else 0))
        if not page:
            return events
        events.extend(page)


def run_tasks(client: Client, run_id: str) -> dict[str, list[Task]]:
    """The tasks of a run's steps (by their idempotency keys `wf:<run>:<step>:<item>`), by
    step row."""
    found: dict[str, list[Task]] = collections.defaultdict(list)
    cursor = None
    while True:
        page = retried(lambda: client.list(limit=1000, cursor=cursor))
        for task in page.tasks:
            key = task.idempotency_key or ""
            if key.startswith(f"wf:{run_id}:"):
                _, _, step_id, index = key.split(":")[:4]
                found[label(step_id, int(index))].append(task)
        cursor = page.next_cursor
        if cursor is None:
            return found


def assert_each_step_ran_once(client: Client, detail: RunDetail) -> None:
    """No step lost or repeated: one task per task step, linked to its row, succeeded once;
    each row started and succeeded once in the run's history."""
    tasks = run_tasks(client, detail.run.id)
    rows = {label(s.step_id, s.map_index): s for s in detail.steps}
    task_rows = {name for name, row in rows.items() if row.task_id is not None}
    assert set(tasks) == task_rows, (sorted(tasks), sorted(task_rows))
    for name, step_tasks in tasks.items():
        assert [t.id for t in step_tasks] == [rows[name].task_id], (name, step_tasks)
        task = step_tasks[0]
        assert task.status is TaskStatus.SUCCEEDED, (name, task)
        outcomes = [a.outcome for a in retried(lambda: client.attempts(task.id))]
        # an attempt may be lost with a killed orchestrator and run again; it succeeds once
        assert outcomes.count(AttemptOutcome.SUCCEEDED) == 1, (name, outcomes)
        assert outcomes[-1] is AttemptOutcome.SUCCEEDED, (name, outcomes)
    events = all_events(client, detail.run.id)
    for kind in ("step_running", "step_succeeded"):
        counted = collections.Counter(label(e.step_id or "", e.map_index)
                                      for e in events if e.kind == kind)
        assert max(counted.values()) == 1, (kind, counted)


def test_orchestrator_killed_at_each_boundary_of_a_run_loses_and_repeats_no_step(platform):
    client = platform
    pids = [orchestrator_pid(client)]
    run_id = client.submit_workflow(CRASHY, CRASHY_INPUT, idempotency_key="sigkill-1").run.id
    pids.append(kill_orchestrator(client))  # acknowledged, so durable: it is resumed

    run_until(client, run_id, lambda s: s["list"] == "running", "the first step to start")
    pids.append(kill_orchestrator(client))

    run_until(client, run_id, lambda s: "succeeded" in (s.get("each[0]"), s.get("each[1]"))
              and s.get("each[4]") in ("waiting", "ready", "running"), "the fan-out half done")
    pids.append(kill_orchestrator(client))

    run_until(client, run_id, lambda s: s["approve"] == "awaiting_approval"
              and s["run"] == "waiting", "the approval to be asked", 90)
    pids.append(kill_orchestrator(client))
    again = retried(lambda: client.get_run(run_id))
    assert statuses(again)["approve"] == "awaiting_approval"  # still asking, nothing skipped
    assert retried(lambda: client.submit_workflow(
        CRASHY, CRASHY_INPUT, idempotency_key="sigkill-1")).run.id == run_id

    retried(lambda: client.approve(run_id, "approve", "go", actor="user:ann"))
    pids.append(kill_orchestrator(client))
    assert len(set(pids)) == 6  # five kills, six processes

    detail = retried(lambda: client.wait_run(run_id, 90))
    assert detail.run.status.value == "succeeded", (detail.run.error, statuses(detail))
    assert statuses(detail) == {
        "list": "succeeded", "each": "succeeded", "never": "skipped", "maybe": "succeeded",
        "approve": "succeeded", "final": "succeeded",
        **{f"each[{i}]": "succeeded" for i in range(len(ITEMS))}}
    final = next(s for s in detail.steps if s.step_id == "final")
    assert final.output["echo"] == [ITEMS, None, "tagged"]
    assert next(s for s in detail.steps if s.step_id == "approve").decided_by == "user:ann"
    assert_each_step_ran_once(client, detail)


def test_a_1000_wide_fan_out_completes_within_its_parallelism(platform):
    client = platform
    width, parallelism = 1000, 50
    document = {"name": "wide", "steps": [
        {"id": "each", "agent_type": "calculator",
         "payload": {"operation": "sum", "numbers": ["${ item }", 1]},
         "map_over": {"over": "input.numbers", "max_width": width,
                      "parallelism": parallelism}},
        {"id": "total", "agent_type": "calculator", "depends_on": ["each"],
         "payload": {"operation": "sum", "numbers": "${ steps.each.output[*].value }"}},
    ]}
    detail = client.submit_workflow(document, {"numbers": list(range(width))}, wait_s=60)
    assert detail.run.status.value == "succeeded", (detail.run.status, detail.run.error)
    items = [s for s in detail.steps if s.step_id == "each" and s.map_index >= 0]
    assert len(items) == width and {s.status.value for s in items} == {"succeeded"}
    total = next(s for s in detail.steps if s.step_id == "total")
    assert total.output["value"] == sum(range(width)) + width
    assert [s.output["value"] for s in sorted(items, key=lambda s: s.map_index)] == \
        [i + 1 for i in range(width)]  # the fan-in keeps item order

    running: set[int] = set()
    peak = 0
    for event in all_events(client, detail.run.id):  # replay: never over the parallelism
        if event.step_id == "each" and event.map_index is not None and event.map_index >= 0:
            if event.kind in ("step_ready", "step_running"):
                running.add(event.map_index)
            elif event.kind in ("step_succeeded", "step_failed", "step_cancelled"):
                running.discard(event.map_index)
            peak = max(peak, len(running))
    assert 1 < peak <= parallelism, peak
    tasks = run_tasks(client, detail.run.id)
    assert len(tasks) == width + 1 and all(len(t) == 1 for t in tasks.values())


def test_cancelling_a_run_mid_way_stops_its_running_and_waiting_steps(platform):
    client = platform
    document = {"name": "cancel-me", "steps": [
        {"id": "each", "agent_type": "sleeper", "payload": {"echo": "${ item }", "seconds": 30},
         "map_over": {"over": "input.items", "max_width": 10, "parallelism": 2}},
        {"id": "after", "agent_type": "sleeper", "depends_on": ["each"], "payload": {}},
    ]}
    run_id = client.submit_workflow(document, {"items": ITEMS}).run.id
    running = run_until(client, run_id, lambda s: [s.get(f"each[{i}]") for i in range(5)]
                        == ["running", "running", "waiting", "waiting", "waiting"],
                        "two items running, three waiting")
    running_tasks = [s.task_id for s in running.steps if s.task_id is not None]
    assert len(running_tasks) == 2

    cancelled = client.cancel_run(run_id)
    assert cancelled.run.status.value == "cancelled"
    assert set(statuses(cancelled).values()) == {"cancelled"}
    for task_id in running_tasks:
        assert client.wait(task_id, 20).status is TaskStatus.CANCELLED
    time.sleep(1.0)  # nothing more starts: no item released, no task for what waited
    assert sorted(t.id for ts in run_tasks(client, run_id).values() for t in ts) == \
        sorted(running_tasks)
    assert client.get_run(run_id).run.status.value == "cancelled"
    kinds = [e.kind for e in all_events(client, run_id)]
    after_cancel = kinds[kinds.index("run_cancelled") + 1:]
    assert "step_running" not in after_cancel and "step_ready" not in after_cancel, kinds
