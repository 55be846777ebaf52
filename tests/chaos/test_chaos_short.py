"""The short chaos run of CI: `ymera chaos` for about a minute with a fixed seed, on a platform
of its own (its own Ray head and a worker node, private PostgreSQL and Redis behind fault
proxies, the HTTP API), while Python and HTTP clients load it and agent replicas, an API
replica and the orchestrator are killed, the worker node hosting a pool is removed, PostgreSQL
restarts and connections to it and to Redis are reset. Every acknowledged task and run must
finish once (none lost, none duplicated), and every error a client saw must be a documented
retryable one. (Serve's HTTP proxy kill is left to the full run: HTTP is refused for about
30 s after it.)

It starts and stops its own cluster, so it runs in the `restarts_ray` pytest process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.chaos.services import postgres_bindir
from tests.support.databases import require_service

pytestmark = pytest.mark.restarts_ray

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("agent_replica_kill", "orchestrator_kill", "postgres_restart", "postgres_reset",
         "redis_reset", "api_replica_kill", "worker_node_removal")
DURATION_S = 75


def test_nothing_acknowledged_is_lost_or_duplicated_under_faults() -> None:
    require_service("PostgreSQL server programs (initdb, pg_ctl)", postgres_bindir() is not None,
                    "install the PostgreSQL server package")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "chaos", "--duration", str(DURATION_S),
         "--seed", "3", "--kinds", ",".join(KINDS), "--settle", "120", "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.stdout, f"no report; exit {result.returncode}:\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    summary = json.dumps({k: report[k] for k in (
        "lost_examples", "duplicated_examples", "malformed_examples", "faults_injected",
        "faults_not_landed", "operations", "client_errors", "undocumented_examples",
        "worst_recovery_s_by_kind")}, indent=1, default=str)
    assert report["lost"] == 0, summary
    assert report["duplicated"] == 0, summary
    assert report["malformed_event_logs"] == 0, summary
    assert report["undocumented_client_errors"] == 0, summary
    assert set(KINDS) <= set(report["faults_injected"]), summary
    assert report["worst_recovery_s_by_kind"]["worker_node_removal"] is not None, summary
    assert report["operations"]["acknowledged_tasks"] >= 50, summary
    assert report["operations"]["acknowledged_runs"] >= 1, summary
    assert report["operations"]["acknowledged_via"].get("http", 0) >= 10, summary
    assert report["operations"]["task_outcomes"].get("succeeded", 0) > 0, summary
    assert result.returncode == 0, result.stderr[-3000:]
