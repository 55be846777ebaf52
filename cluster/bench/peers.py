"""`ymera bench peers`: the platform's core path beside Celery, with the same task, in one run.

It measures, one after the other on the same machine:
- Celery (Redis broker, acks_late, prefork with 2 processes) with the Redis result backend,
  then with the PostgreSQL result backend (SQLAlchemy over psycopg, in a database of its own);
- the platform on SQLite, then on PostgreSQL (`cluster.bench.core.platform_tasks`).
Each path runs `--tasks` calculator tasks `i+1` submitted at once, then gathers every result
(throughput), then runs tasks one at a time, each submitted only when the previous result is
back (round trip p50/p95). The report has each path's ratios to both Celery paths and the
goals (throughput at least 2x Celery with Redis and 10x Celery with PostgreSQL; one task at a
time p50 at most 5 ms), met or missed.

Celery comes with the optional extra (`pip install '.[compare]'`). Its worker is a process this
benchmark starts and always stops; its Redis keys all carry the run's id and are deleted at the
end, and its PostgreSQL databases are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psutil

from cluster.bench.core import (
    DEFAULT_POSTGRES_ADMIN_URL, ROUND_TRIPS, _admin, _percentiles, platform_tasks)
from cluster.bench.report import publish_report
from storage.errors import InvalidRequest

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
WORKER_CONCURRENCY = 2
WARMUP_TASKS = 100
WORKER_START_TIMEOUT_S = 120.0
WORKER_STOP_TIMEOUT_S = 20.0
RESULT_TIMEOUT_S = 600.0
# How often the client polls the PostgreSQL result backend for an outcome (Celery's default is
# 0.5 s; the Redis result backend tells the client instead): often for a single task, so its
# round trip is not rounded up to the interval; less often while gathering a backlog, so the
# polling does not take the machine's CPU from the worker.
ROUND_TRIP_POLL_INTERVAL_S = 0.001
BACKLOG_POLL_INTERVAL_S = 0.05
CELERY_PATHS = {"celery_redis": "Celery, Redis result backend",
                "celery_postgresql": "Celery, PostgreSQL result backend"}
PLATFORM_PATHS = {"ymera_sqlite": "YMERA on SQLite", "ymera_postgresql": "YMERA on PostgreSQL"}
THROUGHPUT_GOALS = {"celery_redis": 2.0, "celery_postgresql": 10.0}
P50_GOAL_MS = 5.0


def run_peers_benchmark(args: Any) -> dict[str, Any]:
    _require_celery()
    if args.tasks < 1:
        raise InvalidRequest(f"--tasks must be at least 1, not {args.tasks}")
    admin = args.postgres_url or DEFAULT_POSTGRES_ADMIN_URL
    redis_url = args.redis_url or DEFAULT_REDIS_URL
    _require_services(redis_url, admin)
    run_id = f"ymera-peers-{uuid.uuid4().hex[:12]}"
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30)},
        "run_id": run_id,
        "task": "the calculator's expression i+1 (Celery's task calls the same function)",
        "tasks": args.tasks, "one_at_a_time": ROUND_TRIPS,
        "celery": {"broker": "redis", "acks_late": True, "pool": "prefork",
                   "concurrency": WORKER_CONCURRENCY,
                   "postgresql_poll_interval_s": {"one_at_a_time": ROUND_TRIP_POLL_INTERVAL_S,
                                                  "backlog": BACKLOG_POLL_INTERVAL_S}},
    }
    paths: dict[str, Any] = {}
    try:
        paths["celery_redis"] = celery_tasks(redis_url, redis_url, run_id, args.tasks)
        with _database(admin, "ymera_peers_celery") as url:
            paths["celery_postgresql"] = celery_tasks(redis_url, _celery_database_url(url),
                                                      run_id, args.tasks)
    finally:
        report["redis_keys_removed"] = _remove_redis_keys(redis_url, run_id)
    paths.update(_platform_paths(admin, args.tasks))
    report["paths"] = paths
    report["ratios"] = ratios(paths)
    report["goals"] = goals(paths)
    return publish_report(report, args, _summary)


def _require_celery() -> None:
    try:
        import celery  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise InvalidRequest(
            f"`ymera bench peers` runs Celery, which is not installed ({exc}); install the "
            "optional extra: pip install '.[compare]'") from exc


def _require_services(redis_url: str, admin_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise InvalidRequest(f"Redis at {_masked(redis_url)} is unreachable ({exc}); start it "
                             "or give --redis-url") from exc
    finally:
        client.close()
    try:
        asyncio.run(_admin(admin_url, "SELECT 1"))
    except Exception as exc:
        raise InvalidRequest(f"PostgreSQL at {_masked(admin_url)} is unreachable ({exc}); "
                             "start it or give --postgres-url (an admin URL that may create "
                             "databases)") from exc


def celery_tasks(broker_url: str, result_backend: str, run_id: str, tasks: int) -> dict[str, Any]:
    """Throughput and one-at-a-time round trips of Celery on a worker of its own."""
    from celery.result import ResultSet

    from cluster.bench.celery_peer import TASK_NAME, make_app

    app = make_app(broker_url, result_backend, run_id)
    try:
        with celery_worker(broker_url, result_backend, run_id) as worker:
            warmup = [app.send_task(TASK_NAME, ("1+1",)) for _ in range(WARMUP_TASKS)]
            _gather_started(ResultSet(warmup, app=app), worker)

            started = time.perf_counter()
            sent = [app.send_task(TASK_NAME, (f"{i}+1",)) for i in range(tasks)]
            submitted = time.perf_counter() - started
            values = ResultSet(sent, app=app).get(timeout=RESULT_TIMEOUT_S,
                                                  interval=BACKLOG_POLL_INTERVAL_S)
            elapsed = time.perf_counter() - started
            succeeded = sum(1 for i, value in enumerate(values) if value["value"] == i + 1)

            round_trips = []
            answered = 0
            for i in range(ROUND_TRIPS):
                started_one = time.perf_counter()
                value = app.send_task(TASK_NAME, (f"{i}+1",)).get(
                    timeout=30, interval=ROUND_TRIP_POLL_INTERVAL_S)
                round_trips.append(time.perf_counter() - started_one)
                answered += value["value"] == i + 1
    finally:
        app.close()
    return {"tasks": tasks, "succeeded": succeeded, "seconds": round(elapsed, 3),
            "per_second": round(tasks / elapsed, 1),
            "submit_per_second": round(tasks / submitted, 1),
            "one_at_a_time_round_trip": _percentiles(round_trips),
            "one_at_a_time_succeeded": answered}


def _gather_started(results: Any, worker: CeleryWorker) -> None:
    """Wait for the warm-up results, or say why the worker never answered."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while True:
        try:
            results.get(timeout=1.0, interval=BACKLOG_POLL_INTERVAL_S)
            return
        except CeleryTimeout:
            if worker.process.poll() is not None:
                raise RuntimeError(f"the Celery worker exited with status "
                                   f"{worker.process.returncode} before answering:\n"
                                   f"{worker.log_tail()}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Celery worker did not answer within "
                                   f"{WORKER_START_TIMEOUT_S:g}s:\n{worker.log_tail()}") from None


@dataclasses.dataclass
class CeleryWorker:
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:].decode(errors="replace")

    def stop(self) -> None:
        """Warm shutdown; then its process group (pool processes left, if any) is killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(WORKER_STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextlib.contextmanager
def celery_worker(broker_url: str, result_backend: str, run_id: str) -> Iterator[CeleryWorker]:
    """A Celery worker on the run's queue, in a process group of its own; stopped however the
    block ends (an error, Ctrl-C)."""
    from cluster.bench.celery_peer import worker_environment

    with tempfile.TemporaryFile() as log:
        env = {**os.environ, **worker_environment(broker_url, result_backend, run_id)}
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "cluster.bench.celery_peer", "worker",
             "--pool", "prefork", "--concurrency", str(WORKER_CONCURRENCY), "--queues", run_id,
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--loglevel", "WARNING"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        worker = CeleryWorker(process, log)
        try:
            yield worker
        finally:
            worker.stop()


def _remove_redis_keys(redis_url: str, run_id: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"*{run_id}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
        return len(keys)
    finally:
        client.close()


@contextlib.contextmanager
def _database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new PostgreSQL database, dropped (connections closed) when the block exits."""
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _celery_database_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    psycopg = make_url(url).set(drivername="postgresql+psycopg")
    return "db+" + psycopg.render_as_string(hide_password=False)


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _platform_paths(admin_url: str, tasks: int) -> dict[str, Any]:
    import ray

    # its own cluster, never a running one, as `ymera bench core`
    ray.init(address="local", namespace="ymera-bench", include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as state:
            sqlite = platform_tasks(f"sqlite:///{Path(state) / 'bench.db'}", tasks)
        with _database(admin_url, "ymera_peers") as url:
            postgresql = platform_tasks(url, tasks)
    finally:
        ray.shutdown()
    return {"ymera_sqlite": sqlite, "ymera_postgresql": postgresql}


def ratios(paths: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each path's throughput and one-at-a-time p50 over each Celery path's."""
    result = {}
    for name, path in paths.items():
        entry = {}
        for peer in CELERY_PATHS:
            entry[f"throughput_vs_{peer}"] = round(
                path["per_second"] / paths[peer]["per_second"], 2)
            entry[f"p50_vs_{peer}"] = round(
                path["one_at_a_time_round_trip"]["p50_ms"]
                / max(paths[peer]["one_at_a_time_round_trip"]["p50_ms"], 0.1), 2)
        result[name] = entry
    return result


def goals(paths: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, for each database of the platform, each met or missed."""
    found = []
    for name in PLATFORM_PATHS:
        path = paths[name]
        for peer, factor in THROUGHPUT_GOALS.items():
            ratio = round(path["per_second"] / paths[peer]["per_second"], 2)
            found.append({"path": name, "goal": f"throughput >= {factor:g}x {CELERY_PATHS[peer]}",
                          "measured": ratio, "target": factor, "met": ratio >= factor})
        p50 = path["one_at_a_time_round_trip"]["p50_ms"]
        found.append({"path": name, "goal": f"one at a time p50 <= {P50_GOAL_MS:g} ms",
                      "measured": p50, "target": P50_GOAL_MS, "met": p50 <= P50_GOAL_MS})
    return found


def _summary(report: dict[str, Any]) -> str:
    names = {**CELERY_PATHS, **PLATFORM_PATHS}
    width = max(len(n) for n in names.values())
    lines = [f"{report['tasks']} tasks at once, then {report['one_at_a_time']} one at a time",
             f"{'path':<{width}} | throughput     | one at a time p50 (p95) | "
             "vs Celery+Redis | vs Celery+PostgreSQL"]
    for key, name in names.items():
        path, ratio = report["paths"][key], report["ratios"][key]
        trip = path["one_at_a_time_round_trip"]
        latency = f"{trip['p50_ms']} ms ({trip['p95_ms']} ms)"
        lines.append(
            f"{name:<{width}} | {path['per_second']:>8,.0f} /s   | {latency:<23} | "
            f"{ratio['throughput_vs_celery_redis']:>14}x | "
            f"{ratio['throughput_vs_celery_postgresql']:>19}x")
    lines.append("goals:")
    for goal in report["goals"]:
        lines.append(f"  {names[goal['path']]}: {goal['goal']}: {goal['measured']} "
                     f"({'met' if goal['met'] else 'missed'})")
    return "\n".join(lines)
