"""`ymera bench peers` on tiny counts: the report's shape, every path finishing every task, and
nothing left behind (Celery's worker, its Redis keys, the PostgreSQL databases); never speed.
And its refusal, naming the extra to install, when Celery is missing.

The benchmark starts and stops its own Ray, so it runs as a separate process, in the pytest
process of the tests marked `restarts_ray`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis

from cluster.bench import add_arguments
from cluster.bench.peers import CELERY_PATHS, PLATFORM_PATHS, _summary, run_peers_benchmark
from storage.errors import InvalidRequest
from tests.support.databases import POSTGRES_ADMIN_URL, postgres_reachable, require_service
from tests.support.redis_service import REDIS_URL, require_redis

ROOT = Path(__file__).resolve().parents[2]
TASKS = 50


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    add_arguments(parser)
    return parser.parse_args(["peers", *argv])


def test_without_celery_it_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "celery", None)  # import celery raises ImportError
    with pytest.raises(InvalidRequest, match=re.escape("pip install '.[compare]'")):
        run_peers_benchmark(_args("--tasks", str(TASKS)))


def test_a_task_count_below_one_is_refused():
    with pytest.raises(InvalidRequest, match="--tasks"):
        run_peers_benchmark(_args("--tasks", "0"))


def _peer_databases() -> set[str]:
    async def names() -> set[str]:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            rows = await connection.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'ymera_peers%'")
        finally:
            await connection.close()
        return {row["datname"] for row in rows}

    return asyncio.run(names())


@pytest.mark.restarts_ray
def test_a_small_run_sets_the_platform_beside_celery_and_leaves_nothing_behind(tmp_path):
    require_redis()
    require_service("PostgreSQL", postgres_reachable(),
                    f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}")
    databases_before = _peer_databases()
    output = tmp_path / "peers.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "bench", "peers", "--json", "--tasks", str(TASKS),
         "--redis-url", REDIS_URL, "--postgres-url", POSTGRES_ADMIN_URL,
         "--output", str(output)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert json.loads(output.read_text()) == report

    paths = report["paths"]
    assert set(paths) == set(CELERY_PATHS) | set(PLATFORM_PATHS)
    for name, path in paths.items():
        assert path["tasks"] == TASKS, name
        assert path["succeeded"] == TASKS, name
        assert path["per_second"] > 0, name
        trip = path["one_at_a_time_round_trip"]
        assert 0 < trip["p50_ms"] <= trip["p95_ms"], name
    for name in CELERY_PATHS:
        assert paths[name]["one_at_a_time_succeeded"] == report["one_at_a_time"]

    for name, ratio in report["ratios"].items():
        assert ratio["throughput_vs_celery_redis"] == pytest.approx(
            paths[name]["per_second"] / paths["celery_redis"]["per_second"], abs=0.01)
    assert report["ratios"]["celery_postgresql"]["throughput_vs_celery_postgresql"] == 1.0
    assert len(report["goals"]) == 3 * len(PLATFORM_PATHS)
    for goal in report["goals"]:
        assert goal["path"] in PLATFORM_PATHS
        at_most = goal["goal"].startswith("one at a time")
        assert goal["met"] == (goal["measured"] <= goal["target"] if at_most
                               else goal["measured"] >= goal["target"])

    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert list(client.scan_iter(match=f"*{report['run_id']}*")) == []
    finally:
        client.close()
    assert _peer_databases() <= databases_before
    workers = [p for p in psutil.process_iter(["cmdline"])
               if report["run_id"] in " ".join(p.info["cmdline"] or ())]
    assert workers == []

    table = _summary(report)
    for label in [*CELERY_PATHS.values(), *PLATFORM_PATHS.values()]:
        assert label in table
    verdicts = [line for line in table.splitlines() if line.endswith(("(met)", "(missed)"))]
    assert len(verdicts) == len(report["goals"])
