"""Observability on a real cluster: a real Prometheus server scrapes a running platform (the
orchestrator's endpoint and the Ray node's), and the JSON log lines Ray's workers write are
read back from the session's log files."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from actors.config import PoolConfig
from cluster.client import Client
from storage.messages import TaskRequest, TaskStatus
from tests.support.platform import run_platform, wait_until
from tests.support.prometheus import prometheus_server

pytestmark = pytest.mark.cluster

POOLS = {"sleeper": PoolConfig(replicas=2), "flaky": PoolConfig(replicas=1)}


@pytest.fixture(scope="module")
def observed(ray_cluster, tmp_path_factory) -> Iterator[tuple[Client, object]]:
    """A platform on PostgreSQL with its metrics endpoint, and a Prometheus scraping it."""
    for client in run_platform("postgresql", tmp_path_factory.mktemp("observed"),
                               pools=POOLS, metrics_port=0):
        orchestrator_target = client.status()["metrics_address"]
        node_target = f"127.0.0.1:{ray.nodes()[0]['MetricsExportPort']}"
        with prometheus_server({"ymera": [orchestrator_target], "ray": [node_target]}) as prom:
            yield client, prom


def by_label(rows, *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(row["metric"].get(label, "") for label in labels): row["value"]
            for row in rows}


def test_prometheus_counts_a_known_workload_per_agent_type(observed):
    client, prom = observed
    tenant = f"obs{uuid.uuid4().hex[:8]}"
    requests = [TaskRequest("ok", {}, "sleeper", tenant=tenant)] * 4 + [
        TaskRequest("retried once", {"succeed_on": 2}, "flaky", tenant=tenant),
        TaskRequest("bad", {"bad": True}, "flaky", tenant=tenant),
        TaskRequest("never", {"succeed_on": 99}, "flaky", tenant=tenant, max_attempts=2),
    ]
    tasks = client.wait_many(client.submit_many(requests), 60)
    assert [t.status for t in tasks] == [TaskStatus.SUCCEEDED] * 5 + [
        TaskStatus.FAILED, TaskStatus.DEAD]

    expected = {("sleeper", "succeeded"): 4, ("flaky", "succeeded"): 1,
                ("flaky", "failed"): 1, ("flaky", "dead"): 1}
    rows = prom.wait_for(
        f'sum by (agent_type, status) (ymera_tasks_finished_total{{tenant="{tenant}"}})',
        lambda rows: by_label(rows, "agent_type", "status") == expected)
    assert by_label(rows, "agent_type", "status") == expected
    submitted = prom.query(
        f'sum by (agent_type) (ymera_tasks_submitted_total{{tenant="{tenant}"}})')
    assert by_label(submitted, "agent_type") == {("sleeper",): 4, ("flaky",): 3}
    retries = prom.query('sum by (agent_type, outcome) (ymera_task_retries_total)')
    assert by_label(retries, "agent_type", "outcome")[("flaky", "error")] == 2
    attempts = prom.query('sum by (agent_type) (ymera_attempt_duration_seconds_count)')
    assert by_label(attempts, "agent_type")[("flaky",)] == 5  # 2 + 1 + 2
    alive = prom.query("sum by (agent_type) (ymera_replicas_alive)")
    assert by_label(alive, "agent_type")[("sleeper",)] == 2


def test_a_killed_replica_shows_in_the_restart_counter(observed):
    client, prom = observed
    before = prom.query('sum(ymera_replica_restarts_total{agent_type="sleeper"}) or vector(0)')
    pids = ray.get(client.orchestrator.replica_pids.remote())
    victim, pid = next((n, p) for n, p in pids.items() if n.startswith("agent:sleeper:") and p)
    os.kill(pid, signal.SIGKILL)
    prom.wait_for('sum(ymera_replica_restarts_total{agent_type="sleeper"})',
                  lambda rows: rows and rows[0]["value"] == before[0]["value"] + 1, timeout=60)
    prom.wait_for('ymera_replicas_alive{agent_type="sleeper"}',
                  lambda rows: rows and rows[0]["value"] == 2, timeout=60)
    assert victim not in ray.get(client.orchestrator.replica_pids.remote())


def worker_log_lines() -> list[dict]:
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    lines = []
    for path in list(logs.glob("worker-*.err")) + list(logs.glob("worker-*.out")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return lines


def test_every_log_line_about_a_task_carries_its_id(observed):
    client, _ = observed
    marker = f"working-{uuid.uuid4().hex}"
    logged = client.submit("logs", {"log": marker}, agent_type="sleeper", tenant="acme")
    retried = client.submit("retries", {"succeed_on": 2}, agent_type="flaky")
    assert client.wait(logged, 60).status is TaskStatus.SUCCEEDED
    assert client.wait(retried, 60).status is TaskStatus.SUCCEEDED

    def lines_about(task_id: str, text: str) -> list[dict]:
        return [line for line in worker_log_lines()
                if text in line.get("message", "") or line.get("task_id") == task_id]

    agent_lines = wait_until(lambda: lines_about(logged, marker), 30, what="the agent's line")
    assert all(line.get("task_id") == logged for line in agent_lines), agent_lines
    (line,) = [line for line in agent_lines if line["message"] == marker]
    assert line["attempt"] == 1 and line["agent_type"] == "sleeper"
    assert line["tenant"] == "acme" and line["replica"].startswith("agent:sleeper:")

    def retry_lines() -> list[dict]:
        return [line for line in worker_log_lines() if line.get("task_id") == retried
                and line["logger"] == "ymera.lifecycle" and "retry in" in line["message"]]

    (line,) = wait_until(retry_lines, 30, what="the orchestrator's retry line")
    assert line["attempt"] == 1 and line["agent_type"] == "flaky" and line["tenant"] == "default"
