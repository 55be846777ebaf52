"""The orchestrator's metrics, read from its real Prometheus endpoint or registry, after known
workloads on an in-process orchestrator. On a real cluster and a real Prometheus server:
tests/cluster/test_metrics_in_prometheus.py."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from actors.config import PoolConfig
from storage.messages import TaskRequest, TaskStatus
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
