"""The orchestrator's metrics, read from its real Prometheus endpoint or registry, after known
workloads on an in-process orchestrator. On a real cluster and a real Prometheus server:
tests/actors/test_observability_on_cluster.py."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors import workflow_engine
from actors.config import PoolConfig
from actors.metrics import OrchestratorMetrics
from storage.messages import TaskRequest, TaskStatus
from storage.workflow_records import RunStatus
from tests.support.inprocess_platform import inprocess_orchestrator

POOLS = {"sleeper": PoolConfig(replicas=1), "flaky": PoolConfig(replicas=1)}


def sample(orchestrator, name: str, **labels: str) -> float:
    return orchestrator.metrics.registry.get_sample_value(name, labels) or 0.0


def scrape(address: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_outcomes_retries_and_cost_are_counted_per_agent_type_and_tenant(tmp_path):
    async with inprocess_orchestrator(tmp_path, pools=POOLS) as orchestrator:
        requests = [TaskRequest("ok", {"burn_s": 0.05}, "sleeper", tenant="acme")] * 3 + [
            TaskRequest("retried once", {"succeed_on": 2}, "flaky", tenant="acme"),
            TaskRequest("bad", {"bad": True}, "flaky", tenant="acme"),
            TaskRequest("never", {"succeed_on": 99}, "flaky", tenant="acme", max_attempts=2),
            TaskRequest("other tenant", {}, "sleeper", tenant="globex"),
        ]
        tasks = await orchestrator.wait_many(await orchestrator.submit_many(requests), 30)
        assert [t.status for t in tasks] == [TaskStatus.SUCCEEDED] * 4 + [
            TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.SUCCEEDED]

        assert sample(orchestrator, "ymera_tasks_submitted_total",
                      agent_type="sleeper", tenant="acme") == 3
        assert sample(orchestrator, "ymera_tasks_submitted_total",
                      agent_type="flaky", tenant="acme") == 3
        assert sample(orchestrator, "ymera_tasks_submitted_total",
                      agent_type="sleeper", tenant="globex") == 1
        for status, count in (("succeeded", 1), ("failed", 1), ("dead", 1)):
            assert sample(orchestrator, "ymera_tasks_finished_total", agent_type="flaky",
                          tenant="acme", status=status) == count, status
        assert sample(orchestrator, "ymera_tasks_finished_total", agent_type="sleeper",
                      tenant="acme", status="succeeded") == 3
        assert sample(orchestrator, "ymera_task_retries_total", agent_type="flaky",
                      outcome="error") == 2  # "retried once" once, "never" once before dying
        assert sample(orchestrator, "ymera_attempt_duration_seconds_count",
                      agent_type="flaky", outcome="error") == 3
        assert sample(orchestrator, "ymera_route_decisions_total",
                      agent_type="flaky", method="requested") == 3
        store = orchestrator.lifecycle.store  # what the dead-letter gauge reads
        assert await store.count_with_status(TaskStatus.DEAD) == 1
        assert await store.count_with_status(TaskStatus.SUCCEEDED) == 5

        cpu = sample(orchestrator, "ymera_cpu_seconds_total", agent_type="sleeper",
                     tenant="acme")
        assert 0.1 <= cpu <= 1.0  # three attempts of 50 ms of CPU each
        assert sum(t.cpu_s for t in tasks[:3]) >= 0.15
        assert sample(orchestrator, "ymera_attempt_seconds_total", agent_type="sleeper",
                      tenant="acme") >= cpu * 0.9


async def test_the_endpoint_serves_live_gauges_of_queues_and_pools(tmp_path):
    pools = {"sleeper": PoolConfig(replicas=2), "flaky": PoolConfig(replicas=0)}
    async with inprocess_orchestrator(tmp_path, pools=pools, metrics_port=0) as orchestrator:
        address = (await orchestrator.status())["metrics_address"]
        assert address and address.startswith("127.0.0.1:")
        await orchestrator.submit_many([TaskRequest("waits", {}, "flaky")] * 4
                                       + [TaskRequest("runs", {"seconds": 2}, "sleeper")])
        await asyncio.sleep(0.3)
        metrics = await asyncio.to_thread(scrape, address)
        assert metrics[("ymera_queue_depth", (("agent_type", "flaky"),))] == 4
        assert metrics[("ymera_tasks_running", (("agent_type", "sleeper"),))] == 1
        assert metrics[("ymera_replicas_desired", (("agent_type", "sleeper"),))] == 2
        assert metrics[("ymera_replicas_alive", (("agent_type", "sleeper"),))] == 2
        assert metrics[("ymera_replicas_alive", (("agent_type", "flaky"),))] == 0
        assert ("process_cpu_seconds_total", ()) in metrics

        await orchestrator.scale("flaky", 1)
        await orchestrator.wait_many(
            [t.id for t in (await orchestrator.list_tasks(agent_type="flaky")).tasks], 30)
        metrics = await asyncio.to_thread(scrape, address)
        assert metrics[("ymera_queue_depth", (("agent_type", "flaky"),))] == 0


async def test_a_lost_replica_counts_one_restart(tmp_path):
    async with inprocess_orchestrator(tmp_path, pools=POOLS) as orchestrator:
        backend = orchestrator.test_backend
        name = next(iter(orchestrator.pools.pools["sleeper"].replicas))
        task_id = await orchestrator.submit(TaskRequest("slow", {"seconds": 1}, "sleeper"))
        while (await orchestrator.get(task_id)).status is not TaskStatus.RUNNING:
            await asyncio.sleep(0.01)
        backend.kill(backend.actors[name])
        assert (await orchestrator.wait(task_id, 30)).status is TaskStatus.SUCCEEDED
        assert sample(orchestrator, "ymera_replica_restarts_total", agent_type="sleeper") == 1
        assert sample(orchestrator, "ymera_task_retries_total", agent_type="sleeper",
                      outcome="lost") == 1


async def test_a_metrics_port_in_use_costs_the_endpoint_not_the_platform(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with inprocess_orchestrator(tmp_path, pools=POOLS, metrics_port=port) as o:
            assert (await o.status())["metrics_address"] is None
            task = await o.wait(await o.submit(TaskRequest("still runs", {}, "sleeper")), 30)
            assert task.status is TaskStatus.SUCCEEDED


def test_workflow_runs_are_counted_by_workflow_tenant_and_outcome():
    metrics = OrchestratorMetrics()
    for tenant in ("acme", "acme", "globex"):
        metrics.workflow_started("report", tenant)
    metrics.workflow_finished("report", "acme", "succeeded", 2 * 3600.0)
    metrics.workflow_finished("report", "acme", "failed", 0.004)
    metrics.workflow_step_waited("report", 0.0008)
    metrics.workflow_step_waited("report", 45.0)

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    assert value("ymera_workflow_runs_started_total", workflow="report", tenant="acme") == 2
    assert value("ymera_workflow_runs_started_total", workflow="report", tenant="globex") == 1
    for outcome in ("succeeded", "failed"):
        assert value("ymera_workflow_runs_finished_total", workflow="report", tenant="acme",
                     outcome=outcome) == 1
    duration = "ymera_workflow_run_duration_seconds_bucket"
    assert value(duration, workflow="report", outcome="failed", le="0.005") == 1
    assert value(duration, workflow="report", outcome="succeeded", le="3600.0") == 0
    assert value(duration, workflow="report", outcome="succeeded", le="14400.0") == 1
    assert value(duration, workflow="report", outcome="succeeded", le="86400.0") == 1
    wait = "ymera_workflow_step_wait_seconds_bucket"
    assert value(wait, workflow="report", le="0.001") == 1
    assert value(wait, workflow="report", le="30.0") == 1
    assert value(wait, workflow="report", le="60.0") == 2
    assert value("ymera_workflow_step_wait_seconds_sum",
                 workflow="report") == pytest.approx(45.0008)


async def test_workflow_gauges_are_reported_from_live_state():
    metrics = OrchestratorMetrics()
    state = {"ymera_workflow_runs_active": {("running",): 3, ("waiting",): 2},
             "ymera_workflow_runs_awaiting_approval": {(): 1},
             "ymera_workflow_runs_overdue": {(): 0}}
    metrics.watch(lambda: state, asyncio.get_running_loop())
    text = prometheus_client.generate_latest(metrics.registry).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("ymera_workflow_runs_active", (("status", "running"),))] == 3
    assert samples[("ymera_workflow_runs_active", (("status", "waiting"),))] == 2
    assert samples[("ymera_workflow_runs_awaiting_approval", ())] == 1
    assert samples[("ymera_workflow_runs_overdue", ())] == 0
    state["ymera_workflow_runs_overdue"] = {(): 4}
    text = prometheus_client.generate_latest(metrics.registry).decode()
    assert "ymera_workflow_runs_overdue 4.0" in text.splitlines()


async def test_workflow_runs_are_counted_as_they_start_wait_and_finish(tmp_path, monkeypatch):
    monkeypatch.setattr(workflow_engine, "GAUGE_INTERVAL_S", 0.05)
    chain = {"name": "chain", "steps": [
        {"id": "first", "agent_type": "sleeper", "payload": {}},
        {"id": "second", "agent_type": "sleeper", "depends_on": ["first"], "payload": {}}]}
    gated = {"name": "gated", "steps": [{"id": "sign_off", "approval": {"timeout_s": 600}}]}
    async with inprocess_orchestrator(tmp_path, pools=POOLS) as orchestrator:
        done = await orchestrator.submit_workflow(chain, {}, tenant="acme", wait_s=30)
        assert done.run.status is RunStatus.SUCCEEDED
        waiting = await orchestrator.submit_workflow(gated, {}, tenant="acme")

        def parked() -> tuple[float, float]:
            return (sample(orchestrator, "ymera_workflow_runs_awaiting_approval"),
                    sample(orchestrator, "ymera_workflow_runs_active", status="waiting"))

        for _ in range(200):
            if parked() == (1, 1):
                break
            await asyncio.sleep(0.02)
        assert parked() == (1, 1)
        assert sample(orchestrator, "ymera_workflow_runs_overdue") == 0
        await orchestrator.cancel_run(waiting.run.id, tenant="acme")

        assert sample(orchestrator, "ymera_workflow_runs_started_total", workflow="chain",
                      tenant="acme") == 1
        assert sample(orchestrator, "ymera_workflow_runs_started_total", workflow="gated",
                      tenant="acme") == 1
        assert sample(orchestrator, "ymera_workflow_runs_finished_total", workflow="chain",
                      tenant="acme", outcome="succeeded") == 1
        assert sample(orchestrator, "ymera_workflow_runs_finished_total", workflow="gated",
                      tenant="acme", outcome="cancelled") == 1
        assert sample(orchestrator, "ymera_workflow_run_duration_seconds_count",
                      workflow="chain", outcome="succeeded") == 1
        assert sample(orchestrator, "ymera_workflow_step_wait_seconds_count",
                      workflow="chain") == 2  # one per step task
        for _ in range(200):
            if parked() == (0, 0):
                break
            await asyncio.sleep(0.02)
        assert parked() == (0, 0)
