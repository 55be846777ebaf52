"""`ymera bench scale`: how throughput grows with replicas of a CPU-bound agent type, and how
quickly an autoscaled pool answers a backlog, in one run on one local Ray cluster.

It starts its own local Ray cluster (never joining one already running here; on loopback, its
GCS on a free port) and one orchestrator on an embedded SQLite database in a temporary
directory, router off (tasks name their type), with one agent type of its own, `cpu_burner`
(`CpuBurner` below: each task keeps one CPU busy for `burn_ms` of CPU time; one task at a time
per replica, one CPU reserved per replica). Then:

- throughput: for each step of replicas (1, 2, 4 by default) the pool is pinned to that many
  and waited for, warmed up with two tasks per replica, then `tasks` tasks are submitted at once
  and waited for: tasks per second from the first submission until every outcome is
  recorded, and the speedup over the first step. The ceiling is the host's CPUs: replicas beyond them
  share cores, so on a 2-core host throughput cannot grow past 2 replicas. Ray is given at
  least as many logical CPUs as the largest step, so that every replica can be placed.
- autoscaling: the pool is pinned back to one replica, then given the bounds 1 to the largest
  step (target backlog one task per replica, no upscale delay); `backlog` tasks are submitted
  at once. Seconds from the submission starting until the pool's desired count rises and
  until a new replica is live (the pool polled every 50 ms), until the first new replica and
  until the last one started its first task (from the task records: which replica ran each,
  when it finished and its wall time), and until the backlog is done; then how long after
  that the pool is back at one replica (it shrinks after the downscale delay).

It prints a readable summary, or the JSON report with `--json`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import ray

from actors.agent import Agent
from actors.config import AutoscaleConfig, OrchestratorConfig, PoolConfig
from actors.deploy import start_orchestrator
from actors.errors import InvalidTaskInput
from cluster.bench.report import publish_report
from cluster.client import Client
from ml.config import RouterConfig
from storage.database import migrate
from storage.errors import InvalidRequest
from storage.messages import AgentSpec, AgentTask, Resources, Task, TaskRequest, TaskStatus

AGENT_TYPE = "cpu_burner"
AGENT_PATH = "cluster.bench.scale:CpuBurner"
MAX_BURN_MS = 60_000
SUBMIT_BATCH = 200
POLL_S = 0.05
SHRINK_POLL_S = 0.25
POOL_TIMEOUT_S = 180.0
SHRINK_GRACE_S = 30.0


class CpuBurner(Agent):
    """Keeps one CPU busy for the task's `burn_ms` of CPU time (measured with the thread's
    CPU clock, so a shared core makes a task take longer, not use less), off the replica's
    event loop so its health checks still answer; answers with the replica that ran it."""

    spec = AgentSpec(
        name=AGENT_TYPE, description="keeps one CPU busy for burn_ms per task (benchmark load)",
        capabilities=("benchmarking",), examples=("keep a CPU busy for the scaling benchmark",),
        resources=Resources(num_cpus=1), concurrency=1)

    async def run(self, task: AgentTask) -> dict[str, Any]:
        burn_ms = task.payload.get("burn_ms")
        if isinstance(burn_ms, bool) or not isinstance(burn_ms, int | float) \
                or not 0 <= burn_ms <= MAX_BURN_MS:
            raise InvalidTaskInput(f"burn_ms must be a number from 0 to {MAX_BURN_MS}",
                                   {"field": "burn_ms"})
        await asyncio.to_thread(_burn, burn_ms / 1000)
        return {"burned_ms": burn_ms, "replica": self.context.replica if self.context else None}


def _burn(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def _pool(client: Client) -> dict[str, Any]:
    return next(p for p in client.status()["pools"] if p["agent_type"] == AGENT_TYPE)


def _wait_for_pool(client: Client, replicas: int) -> dict[str, Any]:
    """The pool's snapshot once exactly `replicas` replicas exist and all are live."""
    deadline = time.monotonic() + POOL_TIMEOUT_S
    while (pool := _pool(client))["live"] != replicas or len(pool["replicas"]) != replicas:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {AGENT_TYPE} pool did not reach {replicas} live replicas "
                               f"in {POOL_TIMEOUT_S:g}s: {pool}")
        time.sleep(POLL_S)
    return pool


def _submit(client: Client, tasks: int, burn_ms: float) -> list[str]:
    requests = [TaskRequest(f"burn {burn_ms:g} ms", {"burn_ms": burn_ms}, AGENT_TYPE)
                for _ in range(tasks)]
    ids: list[str] = []
    for offset in range(0, tasks, SUBMIT_BATCH):
        ids += client.submit_many(requests[offset:offset + SUBMIT_BATCH])
    return ids


def _wait_timeout_s(tasks: int, burn_ms: float) -> float:
    """Generous: every task run one after another, ten times over, plus a minute."""
    return 60.0 + 10 * tasks * burn_ms / 1000


def _succeeded(tasks: list[Task]) -> list[Task]:
    return [t for t in tasks if t.status is TaskStatus.SUCCEEDED]


def _tasks_per_replica(tasks: list[Task]) -> dict[str, int]:
    return dict(sorted(collections.Counter(t.result["replica"] for t in tasks).items()))


def throughput_step(client: Client, replicas: int, tasks: int, burn_ms: float) -> dict[str, Any]:
    """Tasks per second of a pool pinned to `replicas`, with `tasks` submitted at once."""
    client.scale(AGENT_TYPE, replicas)
    _wait_for_pool(client, replicas)
    client.wait_many(_submit(client, 2 * replicas, burn_ms), _wait_timeout_s(2, burn_ms))
    started = time.perf_counter()
    finished = client.wait_many(_submit(client, tasks, burn_ms), _wait_timeout_s(tasks, burn_ms))
    elapsed = time.perf_counter() - started
    succeeded = _succeeded(finished)
    return {"replicas": replicas, "tasks": tasks, "succeeded": len(succeeded),
            "seconds": round(elapsed, 3), "tasks_per_second": round(tasks / elapsed, 1),
            "tasks_per_replica": _tasks_per_replica(succeeded)}


class _Backlog:
    """Waits for a backlog's outcomes in a thread, so the pool can be polled meanwhile."""

    def __init__(self, client: Client, ids: list[str], timeout_s: float) -> None:
        self.finished: list[Task] = []
        self._thread = threading.Thread(
            target=self._wait, args=(client, ids, timeout_s), daemon=True)
        self._thread.start()

    def _wait(self, client: Client, ids: list[str], timeout_s: float) -> None:
        self.finished = client.wait_many(ids, timeout_s)

    def done(self) -> bool:
        return not self._thread.is_alive()


def _first_starts(tasks: list[Task], since: float) -> dict[str, float]:
    """Seconds from `since` (a `time.time()`) until each replica started its first task."""
    starts: dict[str, float] = {}
    for task in tasks:
        assert task.finished_at is not None  # the tasks have finished
        started = task.finished_at.timestamp() - task.wall_s - since
        replica = task.result["replica"]
        starts[replica] = min(starts.get(replica, started), started)
    return starts


def autoscale_reaction(client: Client, max_replicas: int, backlog: int, burn_ms: float,
                       downscale_delay_s: float) -> dict[str, Any]:
    """Seconds from a backlog appearing on a one-replica pool (bounds 1 to `max_replicas`)
    to each step of its growth, to the backlog done, and to the pool shrunk back."""
    client.scale(AGENT_TYPE, 1)
    first = {r["name"] for r in _wait_for_pool(client, 1)["replicas"]}
    client.scale(AGENT_TYPE, min_replicas=1, max_replicas=max_replicas)
    desired_rose_s = new_replica_live_s = None
    peak_desired = peak_live = 0
    started, started_at = time.perf_counter(), time.time()
    ids = _submit(client, backlog, burn_ms)
    submitted_s = time.perf_counter() - started
    waiter = _Backlog(client, ids, _wait_timeout_s(backlog, burn_ms))
    while not waiter.done():
        pool = _pool(client)
        now = round(time.perf_counter() - started, 3)
        peak_desired, peak_live = max(peak_desired, pool["desired"]), max(peak_live, pool["live"])
        if desired_rose_s is None and pool["desired"] > 1:
            desired_rose_s = now
        if new_replica_live_s is None and any(r["ready"] and r["name"] not in first
                                              for r in pool["replicas"]):
            new_replica_live_s = now
        time.sleep(POLL_S)
    done_s = time.perf_counter() - started
    succeeded = _succeeded(waiter.finished)
    new_starts = [s for replica, s in _first_starts(succeeded, started_at).items()
                  if replica not in first]
    shrunk_after_s = None
    deadline = time.monotonic() + downscale_delay_s + SHRINK_GRACE_S
    while time.monotonic() < deadline:
        pool = _pool(client)
        if pool["desired"] == 1 and len(pool["replicas"]) == 1:
            shrunk_after_s = round(time.perf_counter() - started - done_s, 3)
            break
        time.sleep(SHRINK_POLL_S)
    return {
        "max_replicas": max_replicas, "backlog": backlog, "succeeded": len(succeeded),
        "submit_seconds": round(submitted_s, 3),
        "desired_rose_s": desired_rose_s, "new_replica_live_s": new_replica_live_s,
        "new_replica_took_work_s": round(min(new_starts), 3) if new_starts else None,
        "all_new_replicas_took_work_s": (round(max(new_starts), 3)
                                         if len(new_starts) == max_replicas - 1 else None),
        "backlog_done_s": round(done_s, 3), "peak_desired": peak_desired,
        "peak_live": peak_live, "tasks_per_replica": _tasks_per_replica(succeeded),
        "shrunk_to_one_after_done_s": shrunk_after_s,
    }


def _platform(database_url: str, max_replicas: int, health_interval_s: float,
              downscale_delay_s: float) -> Any:
    migrate(database_url)
    return start_orchestrator(OrchestratorConfig(
        database_url=database_url, namespace=f"ymera-bench-{uuid.uuid4().hex[:8]}",
        agent_modules=(AGENT_PATH,), default_replicas=0,
        pools={AGENT_TYPE: PoolConfig(min_replicas=1, max_replicas=max_replicas,
                                      target_backlog=1)},
        autoscale=AutoscaleConfig(upscale_delay_s=0.0, downscale_delay_s=downscale_delay_s),
        health_interval_s=health_interval_s,
        router=RouterConfig(enabled=False)))


def _replica_steps(text: str) -> list[int]:
    """`--replica-steps` ("1,2,4") as numbers of replicas, each at least one."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise InvalidRequest(f"--replica-steps must be comma-separated numbers of replicas, "
                             f"each at least 1; got {text!r}")
    return [int(part) for part in parts]


def run_scale_benchmark(args: Any) -> dict[str, Any]:
    steps = _replica_steps(args.replica_steps)
    cpus = os.cpu_count() or 1
    ray_cpus = max(cpus, *steps)
    ray.init(address="local", num_cpus=ray_cpus, namespace="ymera-bench",
             include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    report: dict[str, Any] = {
        "machine": {"cpus": cpus, "ray_cpus": ray_cpus,
                    "memory_gb": round(psutil.virtual_memory().total / 2**30)},
        "agent": {"type": AGENT_TYPE, "burn_ms": args.burn_ms, "concurrency": 1, "num_cpus": 1},
    }
    try:
        with tempfile.TemporaryDirectory() as state:
            orchestrator = _platform(f"sqlite:///{Path(state) / 'bench.db'}", max(steps),
                                     args.health_interval, args.downscale_delay)
            try:
                ray.get(orchestrator.ready.remote(), timeout=POOL_TIMEOUT_S)
                client = Client(orchestrator)
                throughput = [throughput_step(client, n, args.tasks_per_step, args.burn_ms)
                              for n in steps]
                autoscaling = autoscale_reaction(client, max(steps), args.backlog, args.burn_ms,
                                                 args.downscale_delay)
            finally:
                ray.get(orchestrator.stop_pools.remote(), timeout=60)
                ray.kill(orchestrator, no_restart=True)
    finally:
        ray.shutdown()
    baseline = throughput[0]["tasks_per_second"]
    for step in throughput:
        step["speedup"] = round(step["tasks_per_second"] / baseline, 2)
        step["cpu_bound_ceiling_per_second"] = round(
            min(step["replicas"], cpus) * 1000 / args.burn_ms, 1)
    report["throughput"] = throughput
    report["autoscaling"] = {"health_interval_s": args.health_interval, "upscale_delay_s": 0.0,
                             "downscale_delay_s": args.downscale_delay, "target_backlog": 1,
                             **autoscaling}
    return publish_report(report, args, _summary)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}s"


def _summary(report: dict[str, Any]) -> str:
    machine, scaling = report["machine"], report["autoscaling"]
    lines = [f"{report['agent']['type']}: {report['agent']['burn_ms']:g} ms of CPU per task, "
             f"one task at a time per replica; host has {machine['cpus']} CPUs "
             f"(Ray given {machine['ray_cpus']})"]
    for step in report["throughput"]:
        lines.append(
            f"  {step['replicas']} replica(s): {step['tasks_per_second']:.1f} tasks/s "
            f"(x{step['speedup']:.2f}; CPU-bound ceiling {step['cpu_bound_ceiling_per_second']:g}"
            f"/s), {step['succeeded']}/{step['tasks']} succeeded in {step['seconds']:.2f}s")
    if any(step["replicas"] > machine["cpus"] for step in report["throughput"]):
        lines.append(f"  (beyond {machine['cpus']} replicas they share the host's "
                     f"{machine['cpus']} CPUs: throughput cannot grow past that)")
    lines.append(
        f"autoscaling 1 to {scaling['max_replicas']} replicas, {scaling['backlog']} tasks at once "
        f"(decisions every {scaling['health_interval_s']:g}s): desired count rose after "
        f"{_seconds(scaling['desired_rose_s'])}, a new replica live after "
        f"{_seconds(scaling['new_replica_live_s'])} and taking work after "
        f"{_seconds(scaling['new_replica_took_work_s'])}, all new replicas after "
        f"{_seconds(scaling['all_new_replicas_took_work_s'])}; backlog done after "
        f"{_seconds(scaling['backlog_done_s'])}, {scaling['succeeded']}/{scaling['backlog']} "
        f"succeeded; back to one replica {_seconds(scaling['shrunk_to_one_after_done_s'])} "
        f"after that (downscale delay {scaling['downscale_delay_s']:g}s)")
    return "\n".join(lines)

