"""The platform on a cluster that the Ray autoscaler grows and shrinks: a backlog makes the
sleeper pool grow past what the head node holds, the autoscaler launches a worker node for the
replicas that do not fit, tasks run there, and once the work is done the pool shrinks back to
its minimum and the autoscaler removes the idle node.

The cluster is Ray's fake multi-node autoscaling cluster (`tests/support/fake_cluster.py`),
whose start and shutdown stop every Ray process on the machine, so this runs in the pytest
process of the tests marked `restarts_ray`, connected to nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from actors.config import AutoscaleConfig, PoolConfig
from cluster.client import Client
from storage.messages import AttemptOutcome, TaskRequest, TaskStatus
from tests.support.fake_cluster import FakeMultiNodeCluster
from tests.support.platform import USED_POOLS, run_platform, wait_until

pytestmark = pytest.mark.restarts_ray

HEAD_CPUS = 1
WORKER_CPUS = 2
MAX_REPLICAS = HEAD_CPUS + WORKER_CPUS  # one replica per CPU: the head holds one
NODE_IDLE_MINUTES = 0.05  # the autoscaler removes a worker node idle for 3 s
POOL_IDLE_S = 2.0
# Long enough that one replica alone would still be busy well after a node is launched.
TASKS, TASK_S = 24, 1.0


@pytest.fixture(scope="module")
def autoscaling_cluster() -> Iterator[FakeMultiNodeCluster]:
    ray.shutdown()
    cluster = FakeMultiNodeCluster(
        HEAD_CPUS, {"cpu_worker": {"resources": {"CPU": WORKER_CPUS}, "node_config": {},
                                   "min_workers": 0, "max_workers": 1}},
        idle_timeout_minutes=NODE_IDLE_MINUTES)
    cluster.start()
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def platform(autoscaling_cluster, tmp_path) -> Iterator[Client]:
    pools = {name: PoolConfig(replicas=0) for name in USED_POOLS}
    pools["sleeper"] = PoolConfig(min_replicas=1, max_replicas=MAX_REPLICAS, target_backlog=1,
                                  concurrency=1, num_cpus=1)
    yield from run_platform("postgresql", tmp_path, pools=pools,
                            autoscale=AutoscaleConfig(downscale_delay_s=POOL_IDLE_S))


def sleeper_pool(client: Client) -> dict:
    return next(p for p in client.status()["pools"] if p["agent_type"] == "sleeper")


def alive_nodes() -> set[str]:
    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}


def ready_replicas_on(client: Client, node_id: str) -> set[str]:
    return {r["name"] for r in sleeper_pool(client)["replicas"]
            if r["ready"] and r["node_id"] == node_id}


def test_a_backlog_brings_a_worker_node_that_runs_tasks_and_goes_when_idle(platform):
    [head] = alive_nodes()
    wait_until(lambda: sleeper_pool(platform)["live"] == 1, 60, what="one live replica")
    ids = platform.submit_many([TaskRequest(f"nap {i}", {"seconds": TASK_S, "echo": i}, "sleeper")
                                for i in range(TASKS)])

    wait_until(lambda: sleeper_pool(platform)["desired"] == MAX_REPLICAS, 30,
               what=f"the pool to want {MAX_REPLICAS} replicas")
    [worker] = wait_until(lambda: alive_nodes() - {head}, 90, what="a worker node to join")

    def worker_replicas_ready() -> set[str] | None:
        names = ready_replicas_on(platform, worker)
        return names if len(names) == WORKER_CPUS else None

    on_worker = wait_until(worker_replicas_ready, 90,
                           what="the replicas that did not fit on the head ready on the worker")

    tasks = platform.wait_many(ids, timeout_s=120)
    assert [t.status for t in tasks] == [TaskStatus.SUCCEEDED] * TASKS
    assert sorted(t.result["echo"] for t in tasks) == list(range(TASKS))
    ran_on = [attempt.replica for task in tasks for attempt in platform.attempts(task.id)
              if attempt.outcome is AttemptOutcome.SUCCEEDED]
    assert len(ran_on) == TASKS
    assert set(ran_on) & on_worker, "no task ran on the worker node"

    def back_at_one() -> list[dict] | None:
        pool = sleeper_pool(platform)
        return pool["replicas"] if pool["desired"] == 1 and len(pool["replicas"]) == 1 else None

    [survivor] = wait_until(back_at_one, 30, what="the pool back at one replica")
    assert survivor["node_id"] == head
    wait_until(lambda: alive_nodes() == {head}, 60, what="the autoscaler to remove the worker")
