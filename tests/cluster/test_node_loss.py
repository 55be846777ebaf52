"""A worker node dies in the middle of a workload: the platform loses attempts, never tasks.

Three Ray nodes on this machine (`tests.support.multinode`): the head, where the orchestrator
is pinned, runs no replicas; two workers run the `sleeper` pool. Once the first wave of tasks
has finished, the worker with the most attempts running is killed without warning
(`remove_node(..., allow_graceful=False)`). Every task must still succeed exactly once, the
attempts that were running there must be recorded as lost, and the pool must be back at
strength on the surviving worker, which has room for all of it. (Ray declares the node dead
only when its health checks have failed for about ten seconds; until then a replacement
replica may be placed on the dead node and never start, so the pool is rebuilt after that.)

It starts its own Ray cluster, so it runs in the pytest process of the tests marked
`restarts_ray`; it needs PostgreSQL, as a multi-node platform does.
"""

from __future__ import annotations

import collections

import pytest

from actors.config import PoolConfig
from storage.messages import AttemptOutcome, TaskRequest, TaskStatus
from tests.support.multinode import alive_node_ids, multinode_cluster
from tests.support.platform import USED_POOLS, run_platform, wait_until

pytestmark = pytest.mark.restarts_ray

WORKER_CPUS = (2, 2)  # either worker alone can host the whole pool
REPLICAS = 2
CONCURRENCY = 4
TASKS = 40
TASK_S = 1.0


@pytest.fixture
def cluster():
    with multinode_cluster(WORKER_CPUS) as cluster:
        yield cluster


@pytest.fixture
def client(cluster, tmp_path):
    pools = {name: PoolConfig(replicas=0) for name in USED_POOLS}
    pools["sleeper"] = PoolConfig(replicas=REPLICAS, num_cpus=1, concurrency=CONCURRENCY)
    yield from run_platform("postgresql", tmp_path, pools=pools)


def sleeper_pool(status: dict) -> dict:
    return next(pool for pool in status["pools"] if pool["agent_type"] == "sleeper")


def at_strength_on(client, nodes: set[str]) -> dict | None:
    """The sleeper pool once all its replicas are ready, and on `nodes`; None until then."""
    pool = sleeper_pool(client.status())
    replicas = pool["replicas"]
    if (pool["live"] == REPLICAS and len(replicas) == REPLICAS
            and all(r["ready"] and r["node_id"] in nodes for r in replicas)):
        return pool
    return None


def test_losing_a_worker_node_loses_attempts_but_no_task(cluster, client):
    workers = {node.node_id: node for node in cluster.worker_nodes}
    before = wait_until(lambda: at_strength_on(client, set(workers)), 60,
                        what="the sleeper pool to start on the worker nodes")
    ids = client.submit_many([
        TaskRequest(f"sleep {n}", {"seconds": TASK_S, "echo": n}, agent_type="sleeper")
        for n in range(TASKS)])

    def busy_worker() -> str | None:
        """Once the first wave has finished: the worker with the most attempts running."""
        status = client.status()
        if status["tasks"].get("succeeded", 0) < REPLICAS * CONCURRENCY:
            return None
        running = collections.Counter()
        for replica in sleeper_pool(status)["replicas"]:
            running[replica["node_id"]] += replica["in_flight"]
        node_id, in_flight = running.most_common(1)[0]
        return node_id if in_flight else None

    victim = wait_until(busy_worker, 30, what="attempts running mid-workload")
    lost_replicas = {r["name"] for r in before["replicas"] if r["node_id"] == victim}
    cluster.remove_node(workers[victim], allow_graceful=False)

    tasks = client.wait_many(ids, timeout_s=60)
    assert [t.status for t in tasks] == [TaskStatus.SUCCEEDED] * TASKS
    lost = 0
    for n, task in enumerate(tasks):
        attempts = client.attempts(task.id)
        succeeded = [a for a in attempts if a.outcome is AttemptOutcome.SUCCEEDED]
        assert len(succeeded) == 1, attempts
        assert task.result["attempt"] == succeeded[0].number and task.result["echo"] == n
        events = [e.kind for e in client.events(task.id)]
        assert events.count("succeeded") == 1, events
        for attempt in attempts:
            if attempt.outcome is AttemptOutcome.LOST:
                assert attempt.replica in lost_replicas and attempt.error.code == "replica_lost"
                lost += 1
            else:
                assert attempt.outcome is AttemptOutcome.SUCCEEDED, attempt
    assert lost > 0, "the node was killed while attempts ran there, so some must be lost"

    survivors = set(workers) - {victim}
    wait_until(lambda: victim not in alive_node_ids(), 60, what="Ray to declare the node dead")
    after = wait_until(lambda: at_strength_on(client, survivors), 60,
                       what="the sleeper pool to be rebuilt on the surviving worker")
    assert after["restarts"] >= len(lost_replicas)
