"""`ymera bench workflow`: workflow runs against the plain task path measured alongside, in one
run on one local Ray cluster.

On each database of `--databases` (SQLite in a temporary directory, then a throwaway PostgreSQL
database made at `--postgres-url`, skipped when unreachable), one orchestrator with two
calculator replicas (concurrency 64, router off: every step names its type, as in
`ymera bench core`), and in order:

- chain: a workflow of `--chain-steps` calculator steps, each adding one to the previous step's
  output (so each depends on the one before), against as many plain calculator tasks submitted
  one after another by this driver, each waited for before the next. They take turns,
  `--repeats` times each. A step's time is the gap between consecutive recorded outcomes (task
  `finished_at`; the first from the run's or the first task's creation), so the chain's steps
  pay the engine (advance, plan, submit the next task) where the plain tasks pay this driver's
  two calls; the overhead per step is the chain's p50 (p95) minus the plain tasks' p50 (p95).
- fan-out: a workflow mapping one calculator step over `--fan-out` numbers at the platform's
  largest parallelism, then one step taking the list of their outputs, against as many plain
  calculator tasks submitted as `ymera bench core` does (batches of 200, 4 in flight) and
  waited for, taking turns `--repeats` times; steps per second (mapped items and the fan-in,
  from the submission to the run's end) over tasks per second: the median of the rounds'
  ratios (each round's pair saw the same machine), and the best of each.
- orchestrator kill: a chain run is started; once half its steps succeeded the orchestrator's
  process gets SIGKILL (Ray restarts the actor; the database keeps the run). Seconds from the
  kill until the orchestrator answers again and until the run's next step starts (the first
  `step_running` event written after the kill); the run must then succeed with every step
  started once and the chain's sum right.

Every wait is bounded: a platform that does not finish raises `TimeoutError`. It prints a
readable summary, or the JSON report with `--json`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import ray

from actors.config import OrchestratorConfig, PoolConfig
from actors.deploy import start_orchestrator
from actors.errors import PlatformUnavailable
from cluster.bench.core import (
    DEFAULT_POSTGRES_ADMIN_URL, IN_FLIGHT_BATCHES, SUBMIT_BATCH, _admin, _percentiles)
from cluster.bench.report import publish_report
from cluster.client import Client
from ml.config import RouterConfig
from storage.database import migrate
from storage.errors import InvalidRequest
from storage.messages import Task, TaskRequest, TaskStatus, as_utc, utcnow
from storage.workflow_records import RunDetail, RunEvent
from storage.workflow_spec import WorkflowLimits

AGENT_TYPE = "calculator"
DATABASES = ("sqlite", "postgresql")
CHAIN_GOAL_P50_MS = 5.0  # overhead per step on PostgreSQL
FAN_OUT_GOAL_RATIO = 0.8
RUN_TIMEOUT_S = 300.0
RESTART_TIMEOUT_S = 180.0
POLL_S = 0.005
WARMUP_TASKS = 100


def chain_document(steps: int) -> dict[str, Any]:
    """`steps` calculator steps, s0 adding 1 to the input's `start`, each next one adding 1 to
    the value of the one before."""
    def step(index: int) -> dict[str, Any]:
        before = "input.start" if index == 0 else f"steps.s{index - 1}.output.value"
        return {"id": f"s{index}", "agent_type": AGENT_TYPE,
                "payload": {"operation": "sum", "numbers": f"${{ [{before}, `1`] }}"},
                **({"depends_on": [f"s{index - 1}"]} if index else {})}

    return {"name": "bench-chain", "steps": [step(i) for i in range(steps)]}


def fan_out_document(items: int, parallelism: int) -> dict[str, Any]:
    """One calculator task per number of `input.values` (each adds 1), `parallelism` at a time,
    then one step summing their values."""
    return {"name": "bench-fan-out", "steps": [
        {"id": "each", "agent_type": AGENT_TYPE,
         "payload": {"operation": "sum", "numbers": "${ [item, `1`] }"},
         "map_over": {"over": "input.values", "max_width": items, "parallelism": parallelism}},
        {"id": "total", "agent_type": AGENT_TYPE, "depends_on": ["each"],
         "payload": {"operation": "sum", "numbers": "${ steps.each.output[*].value }"}},
    ]}


def _task(i: int) -> TaskRequest:
    return TaskRequest(f"{i}+1", {"operation": "sum", "numbers": [i, 1]}, AGENT_TYPE)


def _finished(detail: RunDetail, what: str) -> RunDetail:
    if not detail.run.status.is_finished:
        raise TimeoutError(f"the {what} run {detail.run.id} was still {detail.run.status.value} "
                           f"after {RUN_TIMEOUT_S:g}s")
    if detail.run.status.value != "succeeded":
        raise RuntimeError(f"the {what} run {detail.run.id} ended {detail.run.status.value}: "
                           f"{detail.run.error}")
    return detail


class _Steps:
    """Where the time of a sequence of tasks went, from their stored timestamps: `gaps`
    between consecutive outcomes (the first from `start`), and each gap split into `between`
    (the previous outcome, or `start`, to the next task's creation: who submits it reacting)
    and `task` (its creation to its outcome: queue, dispatch, run, record)."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.between: list[float] = []
        self.task: list[float] = []
        self.wall_s = 0.0

    def add(self, start: datetime, tasks: Sequence[Task], wall_s: float) -> None:
        previous = as_utc(start)
        for task in tasks:
            if task.finished_at is None:
                raise RuntimeError(f"task {task.id} is finished but has no finished_at")
            created, finished = as_utc(task.created_at), as_utc(task.finished_at)
            self.gaps.append((finished - previous).total_seconds())
            self.between.append((created - previous).total_seconds())
            self.task.append((finished - created).total_seconds())
            previous = finished
        self.wall_s += wall_s

    def figures(self) -> dict[str, Any]:
        return {**_percentiles(self.gaps),
                "wall_ms": round(self.wall_s / len(self.gaps) * 1000, 1),
                "before_task_p50_ms": _percentiles(self.between)["p50_ms"],
                "task_p50_ms": _percentiles(self.task)["p50_ms"]}


def plain_sequence(client: Client, steps: int, into: _Steps) -> None:
    """`steps` plain tasks, each submitted once the one before has its outcome."""
    started = time.perf_counter()
    tasks = []
    for i in range(steps):
        task = client.wait(client.submit_many([_task(i)])[0], RUN_TIMEOUT_S)
        if task.status is not TaskStatus.SUCCEEDED:
            raise RuntimeError(f"plain task {task.id} ended {task.status.value}")
        tasks.append(task)
    into.add(tasks[0].created_at, tasks, time.perf_counter() - started)


def chain_run(client: Client, steps: int, into: _Steps) -> None:
    """One run of the chain, waited for."""
    started = time.perf_counter()
    detail = client.submit_workflow(chain_document(steps), {"start": 0})
    detail = _finished(client.wait_run(detail.run.id, RUN_TIMEOUT_S), "chain")
    elapsed = time.perf_counter() - started
    order = {f"s{i}": i for i in range(steps)}
    rows = sorted(detail.steps, key=lambda s: order[s.step_id])
    if rows[-1].output["value"] != steps:
        raise RuntimeError(f"the chain summed to {rows[-1].output['value']}, not {steps}")
    tasks = client.wait_many([s.task_id for s in rows if s.task_id], 30)
    into.add(detail.run.created_at, tasks, elapsed)


def chain_overhead(client: Client, steps: int, repeats: int) -> dict[str, Any]:
    plain, chain = _Steps(), _Steps()
    for _ in range(repeats):  # taking turns, so both see the same machine
        plain_sequence(client, steps, plain)
        chain_run(client, steps, chain)
    plain_ms, chain_ms = plain.figures(), chain.figures()
    return {
        "steps": steps, "runs": repeats,
        "plain_per_step": plain_ms, "chain_per_step": chain_ms,
        "overhead_per_step_p50_ms": round(chain_ms["p50_ms"] - plain_ms["p50_ms"], 1),
        "overhead_per_step_p95_ms": round(chain_ms["p95_ms"] - plain_ms["p95_ms"], 1),
    }


def batch_rate(orchestrator: Any, client: Client, tasks: int) -> dict[str, Any]:
    """Plain tasks submitted as `ymera bench core` does, then waited for; tasks per second."""
    requests = [_task(i) for i in range(tasks)]
    started = time.perf_counter()
    ids: list[str] = []
    pending: list[Any] = []
    for offset in range(0, tasks, SUBMIT_BATCH):
        pending.append(orchestrator.submit_many.remote(requests[offset:offset + SUBMIT_BATCH]))
        if len(pending) >= IN_FLIGHT_BATCHES:
            ids += ray.get(pending.pop(0), timeout=RUN_TIMEOUT_S)
    for ref in pending:
        ids += ray.get(ref, timeout=RUN_TIMEOUT_S)
    finished = client.wait_many(ids, RUN_TIMEOUT_S)
    elapsed = time.perf_counter() - started
    succeeded = sum(t.status is TaskStatus.SUCCEEDED for t in finished)
    if succeeded != tasks:
        raise TimeoutError(f"{tasks - succeeded} of {tasks} plain tasks did not succeed in "
                           f"{RUN_TIMEOUT_S:g}s")
    return {"tasks": tasks, "seconds": round(elapsed, 3), "per_second": round(tasks / elapsed, 1)}


def fan_out_rate(client: Client, items: int, parallelism: int) -> dict[str, Any]:
    """One fan-out/fan-in run; steps (mapped items and the fan-in) per second."""
    values = list(range(items))
    started = time.perf_counter()
    detail = client.submit_workflow(fan_out_document(items, parallelism), {"values": values})
    detail = _finished(client.wait_run(detail.run.id, RUN_TIMEOUT_S), "fan-out")
    elapsed = time.perf_counter() - started
    total = next(s for s in detail.steps if s.step_id == "total").output["value"]
    if total != sum(values) + items:
        raise RuntimeError(f"the fan-in summed to {total}, not {sum(values) + items}")
    steps = sum(1 for s in detail.steps if s.task_id is not None)
    return {"items": items, "steps": steps, "seconds": round(elapsed, 3),
            "per_second": round(steps / elapsed, 1)}


def fan_out_against_batch(orchestrator: Any, client: Client, items: int,
                          repeats: int) -> dict[str, Any]:
    parallelism = WorkflowLimits().max_parallelism
    rounds = []
    for _ in range(repeats):
        rounds.append({"batch": batch_rate(orchestrator, client, items),
                       "fan_out": fan_out_rate(client, items, parallelism)})
    batch = max((r["batch"] for r in rounds), key=lambda r: r["per_second"])
    fan_out = max((r["fan_out"] for r in rounds), key=lambda r: r["per_second"])
    per_round = [round(r["fan_out"]["per_second"] / r["batch"]["per_second"], 3)
                 for r in rounds]
    return {"items": items, "parallelism": parallelism, "batch": batch, "fan_out": fan_out,
            "ratio": round(statistics.median(per_round), 3), "ratio_per_round": per_round,
            "ratio_of_bests": round(fan_out["per_second"] / batch["per_second"], 3)}


def _events(client: Client, run_id: str, after_id: int) -> list[RunEvent] | None:
    """The run's events after `after_id`, or None while the orchestrator is away."""
    try:
        return client.run_events(run_id, after_id)
    except PlatformUnavailable:
        return None


def orchestrator_kill(orchestrator: Any, client: Client, steps: int) -> dict[str, Any]:
    """SIGKILL the orchestrator once half of a chain run's steps succeeded; see the module
    docstring for what is measured."""
    pid = ray.get(orchestrator.pid.remote(), timeout=30)
    run_id = client.submit_workflow(chain_document(steps), {"start": 0}).run.id
    seen: list[RunEvent] = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while sum(e.kind == "step_succeeded" for e in seen) < steps // 2:
        if any(e.kind.startswith("run_") and e.kind not in ("run_created", "run_running")
               for e in seen) or time.monotonic() > deadline:
            raise RuntimeError(f"the run ended or stalled before the kill: {seen[-1:]}")
        seen += client.run_events(run_id, seen[-1].id if seen else 0)
        time.sleep(POLL_S)
    killed_at = utcnow()
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    succeeded = {e.step_id for e in seen if e.kind == "step_succeeded"}
    in_flight = sorted({str(e.step_id) for e in seen if e.kind == "step_running"}
                       - {str(s) for s in succeeded})

    back_s = next_step_s = None
    next_step = None
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while next_step is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no step of run {run_id} started within {RESTART_TIMEOUT_S:g}s "
                               "of the orchestrator's kill")
        events = _events(client, run_id, seen[-1].id)
        if events is None:
            time.sleep(POLL_S)
            continue
        if back_s is None:
            back_s = time.monotonic() - killed
        seen += events
        for event in events:
            if event.kind == "step_running" and as_utc(event.at) >= killed_at:
                next_step = event.step_id
                next_step_s = (as_utc(event.at) - killed_at).total_seconds()
                break
        else:
            time.sleep(POLL_S)
    detail = _finished(client.wait_run(run_id, RUN_TIMEOUT_S), "killed chain")
    finished_s = time.monotonic() - killed
    seen += client.run_events(run_id, seen[-1].id)
    starts = collections.Counter(str(e.step_id) for e in seen if e.kind == "step_running")
    final = next(s for s in detail.steps if s.step_id == f"s{steps - 1}").output["value"]
    new_pid = ray.get(orchestrator.pid.remote(), timeout=30)
    return {
        "chain_steps": steps,
        "steps_succeeded_at_kill": len(succeeded),
        "steps_seen_running_at_kill": in_flight,  # as last polled, a few ms before
        "orchestrator_answers_again_s": round(back_s or 0.0, 3),
        "next_step": next_step,
        "next_step_running_s": round(next_step_s or 0.0, 3),
        "run_finished_s": round(finished_s, 3),
        "run_status": detail.run.status.value,
        "steps_started": len(starts),
        "steps_started_twice": sorted(s for s, n in starts.items() if n > 1),
        "sum_right": final == steps,
        "restarted": new_pid != pid,
    }


def measure(database_url: str, args: Any) -> dict[str, Any]:
    """Every figure on one fresh orchestrator of `database_url`."""
    migrate(database_url)
    orchestrator = start_orchestrator(OrchestratorConfig(
        database_url=database_url, namespace=f"ymera-bench-{uuid.uuid4().hex[:8]}",
        default_replicas=0, pools={AGENT_TYPE: PoolConfig(replicas=2, concurrency=64)},
        router=RouterConfig(enabled=False)))
    try:
        ray.get(orchestrator.ready.remote(), timeout=RESTART_TIMEOUT_S)
        client = Client(orchestrator)
        client.wait_many(client.submit_many([_task(i) for i in range(WARMUP_TASKS)]), 60)
        _finished(client.wait_run(client.submit_workflow(
            chain_document(2), {"start": 0}).run.id, RUN_TIMEOUT_S), "warm-up")
        return {
            "database": database_url.split(":", 1)[0],
            "chain": chain_overhead(client, args.chain_steps, args.repeats),
            "fan_out": fan_out_against_batch(orchestrator, client, args.fan_out, args.repeats),
            "orchestrator_kill": orchestrator_kill(orchestrator, client, args.chain_steps),
        }
    finally:
        ray.get(orchestrator.stop_pools.remote(), timeout=60)
        ray.kill(orchestrator, no_restart=True)


def _with_postgres(admin_url: str, args: Any) -> dict[str, Any]:
    """The figures on a new PostgreSQL database at `admin_url`'s server (dropped afterwards),
    or why it was skipped."""
    name = f"ymera_bench_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        return {"skipped": f"PostgreSQL at {admin_url} unreachable: {exc}"}
    try:
        return measure(admin_url.rsplit("/", 1)[0] + "/" + name, args)
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE "{name}" WITH (FORCE)'))


def _check(args: Any) -> list[str]:
    limits = WorkflowLimits()
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if not databases or any(d not in DATABASES for d in databases):
        raise InvalidRequest(f"--databases must be a comma-separated choice of "
                             f"{', '.join(DATABASES)}; got {args.databases!r}")
    if not 2 <= args.chain_steps <= limits.max_steps:
        raise InvalidRequest(f"--chain-steps must be from 2 to {limits.max_steps} (the "
                             f"platform's steps per run); got {args.chain_steps}")
    if not 1 <= args.fan_out <= limits.max_fan_out:
        raise InvalidRequest(f"--fan-out must be from 1 to {limits.max_fan_out} (the "
                             f"platform's fan-out width); got {args.fan_out}")
    if args.repeats < 1:
        raise InvalidRequest(f"--repeats must be at least 1; got {args.repeats}")
    return databases


def run_workflow_benchmark(args: Any) -> dict[str, Any]:
    databases = _check(args)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30)},
        "goals": {"chain_overhead_p50_ms_on_postgresql": CHAIN_GOAL_P50_MS,
                  "fan_out_ratio_to_batch": FAN_OUT_GOAL_RATIO},
    }
    # Ray prints the errors it is told of (the killed orchestrator's failed calls, retried)
    # to stdout: keep them off the report there
    with contextlib.redirect_stdout(sys.stderr):
        _measure_all(databases, args, report)
    return publish_report(report, args, _summary)


def _measure_all(databases: list[str], args: Any, report: dict[str, Any]) -> None:
    # its own cluster, never a running one
    ray.init(address="local", namespace="ymera-bench", include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    try:
        if "sqlite" in databases:
            with tempfile.TemporaryDirectory() as state:
                report["sqlite"] = measure(f"sqlite:///{Path(state) / 'bench.db'}", args)
        if "postgresql" in databases:
            report["postgresql"] = _with_postgres(
                args.postgres_url or DEFAULT_POSTGRES_ADMIN_URL, args)
    finally:
        ray.shutdown()


def _summary(report: dict[str, Any]) -> str:
    lines = []
    for key in DATABASES:
        result = report.get(key)
        if result is None:
            continue
        if "skipped" in result:
            lines.append(f"{key}: skipped ({result['skipped']})")
            continue
        chain, fan, kill = result["chain"], result["fan_out"], result["orchestrator_kill"]
        plain_ms, chain_ms = chain["plain_per_step"], chain["chain_per_step"]
        lines += [
            f"{key}: {chain['steps']}-step chain, per step p50 / p95: "
            f"{chain_ms['p50_ms']} / {chain_ms['p95_ms']} ms; plain sequential tasks "
            f"{plain_ms['p50_ms']} / {plain_ms['p95_ms']} ms; overhead per step "
            f"{chain['overhead_per_step_p50_ms']} / {chain['overhead_per_step_p95_ms']} ms "
            f"(goal p50 <= {CHAIN_GOAL_P50_MS:g} ms on PostgreSQL) "
            f"({chain['runs']} runs; p50 before a step's task is created "
            f"{chain_ms['before_task_p50_ms']} vs {plain_ms['before_task_p50_ms']} ms, from "
            f"creation to outcome {chain_ms['task_p50_ms']} vs {plain_ms['task_p50_ms']} ms; "
            f"wall per step {chain_ms['wall_ms']} vs {plain_ms['wall_ms']} ms)",
            f"{key}: fan-out of {fan['items']} at parallelism {fan['parallelism']} with fan-in: "
            f"{fan['fan_out']['per_second']:.0f} steps/s; batch of plain tasks "
            f"{fan['batch']['per_second']:.0f} tasks/s (best rounds); ratio, median of the "
            f"rounds, {fan['ratio']:.2f} (goal >= {FAN_OUT_GOAL_RATIO:g}) "
            f"(per round {', '.join(f'{r:.2f}' for r in fan['ratio_per_round'])})",
            f"{key}: orchestrator SIGKILL after {kill['steps_succeeded_at_kill']} steps: answers "
            f"again in {kill['orchestrator_answers_again_s']} s, next step ({kill['next_step']}) "
            f"running {kill['next_step_running_s']} s after the kill, run {kill['run_status']} "
            f"{kill['run_finished_s']} s after it; steps started twice: "
            f"{kill['steps_started_twice'] or 'none'}, sum right: {kill['sum_right']}",
        ]
    return "\n".join(lines)
