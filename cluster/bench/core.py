"""`ymera bench core`: raw Ray actor calls versus end-to-end platform tasks, in one run.

It starts one local Ray cluster and measures on it, in order:
- raw: pipelined calls to a trivial async actor (the ceiling any actor platform works under);
- platform on SQLite, then on PostgreSQL: trivial calculator tasks submitted in batches, each
  committed before it is acknowledged, dispatched, run and recorded (succeeded + events);
  then single tasks one at a time (submit, wait for the recorded outcome) for idle latency;
- resident memory (RSS) of the platform's own processes (orchestrator and agent replicas), at
  idle and at the peak under load.
It prints a readable summary, or the JSON report with `--json`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import ray

from actors.config import OrchestratorConfig, PoolConfig
from actors.deploy import start_orchestrator
from cluster.bench.report import publish_report
from cluster.client import Client
from ml.config import RouterConfig
from storage.database import migrate
from storage.messages import TaskRequest, TaskStatus

SUBMIT_BATCH = 200
IN_FLIGHT_BATCHES = 4
ROUND_TRIPS = 100
SAMPLE_INTERVAL_S = 0.1
DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@ray.remote
class _Echo:
    async def echo(self, value: int) -> int:
        return value


def raw_actor_calls(calls: int) -> dict[str, float | list[float]]:
    """Best of three timed rounds after a warm-up round, so worker start-up is not counted."""
    # mypy keeps a decorated class's own type (python/mypy#3135); `_Echo` is Ray's ActorClass
    actor = _Echo.options(max_concurrency=1000).remote()  # type: ignore[attr-defined]
    ray.get([actor.echo.remote(i) for i in range(min(calls, 1000))])
    rounds = []
    for _ in range(3):
        started = time.perf_counter()
        ray.get([actor.echo.remote(i) for i in range(calls)])
        rounds.append(time.perf_counter() - started)
    ray.kill(actor)
    elapsed = min(rounds)
    return {"calls": calls, "seconds": round(elapsed, 3), "per_second": round(calls / elapsed, 1),
            "rounds_per_second": [round(calls / r, 1) for r in rounds]}


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 1)}


class PeakSampler:
    """Samples each process's RSS every `SAMPLE_INTERVAL_S`, keeping each one's peak and the
    peak of their sum (the processes do not all peak at the same moment)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peaks: dict[int, float] = {}
        self.total_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        total = 0.0
        for pid in self.pids:
            try:
                rss = psutil.Process(pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.peaks[pid] = max(self.peaks.get(pid, 0.0), round(rss, 1))
            total += rss
        self.total_peak = max(self.total_peak, round(total, 1))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_INTERVAL_S)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def platform_tasks(database_url: str, tasks: int) -> dict[str, Any]:
    migrate(database_url)
    config = OrchestratorConfig(
        database_url=database_url, namespace=f"ymera-bench-{uuid.uuid4().hex[:8]}",
        default_replicas=0, pools={"calculator": PoolConfig(replicas=2, concurrency=64)},
        router=RouterConfig(enabled=False))  # tasks name their type: this measures dispatch
    orchestrator = start_orchestrator(config)
    try:
        ray.get(orchestrator.ready.remote(), timeout=180)
        client = Client(orchestrator)
        pids = [ray.get(orchestrator.pid.remote())]
        pids += [p for p in ray.get(orchestrator.replica_pids.remote()).values() if p]
        idle = PeakSampler(pids)
        idle.sample()
        warmup = client.submit_many([TaskRequest("1+1", {"expression": "1+1"}, "calculator")
                                     for _ in range(100)])
        client.wait_many(warmup, 60)

        requests = [TaskRequest(f"{i}+1", {"expression": f"{i}+1"}, "calculator")
                    for i in range(tasks)]
        with PeakSampler(pids) as sampler:
            started = time.perf_counter()
            ids: list[str] = []
            pending: list[Any] = []
            for offset in range(0, tasks, SUBMIT_BATCH):
                pending.append(orchestrator.submit_many.remote(
                    requests[offset:offset + SUBMIT_BATCH]))
                if len(pending) >= IN_FLIGHT_BATCHES:
                    ids += ray.get(pending.pop(0))
            for ref in pending:
                ids += ray.get(ref)
            submitted = time.perf_counter() - started
            finished = client.wait_many(ids, 600)
            elapsed = time.perf_counter() - started
        round_trips, two_calls = [], []
        for i in range(ROUND_TRIPS):  # one call: submit and wait (`Client.run`)
            started_one = time.perf_counter()
            client.run(f"{i}+1", {"expression": f"{i}+1"}, agent_type="calculator", wait_s=30)
            round_trips.append(time.perf_counter() - started_one)
        for i in range(ROUND_TRIPS):  # two calls: `submit`, then `wait`
            started_one = time.perf_counter()
            client.wait(client.submit(f"{i}+1", {"expression": f"{i}+1"},
                                      agent_type="calculator"), 30)
            two_calls.append(time.perf_counter() - started_one)
        succeeded = [t for t in finished if t.status is TaskStatus.SUCCEEDED]
        latencies = [(t.finished_at - t.created_at).total_seconds() for t in succeeded
                     if t.finished_at is not None]  # always set on a finished task
        return {
            "database": database_url.split(":", 1)[0],
            "tasks": tasks,
            "succeeded": len(succeeded),
            "seconds": round(elapsed, 3),
            "per_second": round(tasks / elapsed, 1),
            "submit_per_second": round(tasks / submitted, 1),
            "latency": _percentiles(latencies) if latencies else None,
            "one_at_a_time_round_trip": _percentiles(round_trips),
            "one_at_a_time_submit_then_wait": _percentiles(two_calls),
            "rss_mb": {"idle": idle.total_peak,
                       "peak_under_load": sampler.total_peak,
                       "processes": len(pids)},
        }
    finally:
        ray.get(orchestrator.stop_pools.remote(), timeout=60)
        ray.kill(orchestrator, no_restart=True)


async def _admin(admin_url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(admin_url.replace("postgresql+asyncpg", "postgresql"),
                                       timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def run_core_benchmark(args: Any) -> dict[str, Any]:
    # its own cluster, never a running one
    ray.init(address="local", namespace="ymera-bench", include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                          "memory_gb": round(psutil.virtual_memory().total / 2**30)}}
    try:
        report["raw_actor_calls"] = raw_actor_calls(args.raw_calls)
        with tempfile.TemporaryDirectory() as state:
            report["sqlite"] = platform_tasks(f"sqlite:///{Path(state) / 'bench.db'}", args.tasks)
        admin = args.postgres_url or DEFAULT_POSTGRES_ADMIN_URL
        name = f"ymera_bench_{uuid.uuid4().hex[:8]}"
        try:
            asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
        except Exception as exc:
            report["postgresql"] = {"skipped": f"PostgreSQL at {admin} unreachable: {exc}"}
        else:
            try:
                url = admin.rsplit("/", 1)[0] + "/" + name
                report["postgresql"] = platform_tasks(url, args.tasks)
            finally:
                asyncio.run(_admin(admin, f'DROP DATABASE "{name}" WITH (FORCE)'))
        raw = report["raw_actor_calls"]["per_second"]
        for key in ("sqlite", "postgresql"):
            if "per_second" in report[key]:
                report[key]["ratio_to_raw"] = round(report[key]["per_second"] / raw, 3)
    finally:
        ray.shutdown()
    return publish_report(report, args, _summary)


def _summary(report: dict[str, Any]) -> str:
    lines = [f"raw pipelined actor calls: {report['raw_actor_calls']['per_second']:.0f}/s"]
    for key in ("sqlite", "postgresql"):
        result = report[key]
        if "skipped" in result:
            lines.append(f"{key}: skipped ({result['skipped']})")
            continue
        latency = result["latency"] or {}
        lines.append(
            f"{key}: {result['per_second']:.0f} tasks/s ({result['ratio_to_raw']:.0%} of raw), "
            f"latency p50 {latency.get('p50_ms')} ms p95 {latency.get('p95_ms')} ms "
            f"p99 {latency.get('p99_ms')} ms under backlog, one-at-a-time round trip p50 "
            f"{result['one_at_a_time_round_trip']['p50_ms']} ms, RSS idle {result['rss_mb']['idle']} MB "
            f"peak {result['rss_mb']['peak_under_load']} MB")
    return "\n".join(lines)
