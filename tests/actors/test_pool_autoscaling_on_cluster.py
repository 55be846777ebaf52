"""Agent-pool autoscaling on the shared Ray cluster: a backlog starts real replica actors
that take work, idleness stops them again, and scaling down in the middle of work interrupts
no task (every task succeeds on its first attempt)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from actors.config import AutoscaleConfig, PoolConfig
from cluster.client import Client
from storage.messages import AttemptOutcome, TaskRequest, TaskStatus
from tests.support.platform import run_platform, wait_until

pytestmark = pytest.mark.cluster

IDLE_S = 1.5
MAX_REPLICAS = 3


@pytest.fixture(scope="module")
def platform(ray_cluster, tmp_path_factory) -> Iterator[Client]:
    pools = {"sleeper": PoolConfig(min_replicas=1, max_replicas=MAX_REPLICAS, target_backlog=1,
                                   concurrency=1, num_cpus=0.1)}
    yield from run_platform("postgresql", tmp_path_factory.mktemp("autoscaling"), pools=pools,
                            autoscale=AutoscaleConfig(downscale_delay_s=IDLE_S))


def pool(client: Client) -> dict:
    return next(p for p in client.status()["pools"] if p["agent_type"] == "sleeper")


def replica_actors(client: Client) -> set[str]:
    """The replica actors Ray runs for this platform (not what the orchestrator believes)."""
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == client.config.namespace and a["name"].startswith("agent:sleeper")}


def first_attempts_succeeded(client: Client, ids: list[str]) -> list[str]:
    """Each task's one attempt's replica; fails if any task needed more than one."""
    replicas = []
    for task in client.wait_many(ids, timeout_s=60):
        assert task.status is TaskStatus.SUCCEEDED, task
        attempts = client.attempts(task.id)
        assert [a.outcome for a in attempts] == [AttemptOutcome.SUCCEEDED], attempts
        replicas.append(attempts[0].replica)
    return replicas


def test_a_backlog_starts_replicas_that_take_work_and_idleness_stops_them(platform):
    wait_until(lambda: pool(platform)["live"] == 1, 60, what="one live replica")
    ids = platform.submit_many(
        [TaskRequest(f"work {i}", {"seconds": 0.5}, "sleeper") for i in range(12)])

    wait_until(lambda: pool(platform)["live"] == MAX_REPLICAS, 60,
               what=f"{MAX_REPLICAS} live replicas")
    assert len(replica_actors(platform)) == MAX_REPLICAS
    assert len(set(first_attempts_succeeded(platform, ids))) == MAX_REPLICAS

    wait_until(lambda: len(replica_actors(platform)) == 1, 30, what="the pool back at one")
    assert pool(platform)["desired"] == 1 and pool(platform)["draining"] == 0


def test_pinning_a_busy_pool_smaller_interrupts_no_task(platform):
    platform.scale("sleeper", MAX_REPLICAS)
    wait_until(lambda: pool(platform)["live"] == MAX_REPLICAS, 60,
               what=f"{MAX_REPLICAS} live replicas")
    ids = platform.submit_many(
        [TaskRequest(f"work {i}", {"seconds": 1.0}, "sleeper") for i in range(2 * MAX_REPLICAS)])
    wait_until(lambda: sum(r["in_flight"] for r in pool(platform)["replicas"]) == MAX_REPLICAS,
               30, what="every replica busy")

    pinned = platform.scale("sleeper", 1)

    assert pinned["draining"] == MAX_REPLICAS - 1
    assert len(replica_actors(platform)) == MAX_REPLICAS  # still finishing their tasks
    replicas = first_attempts_succeeded(platform, ids)
    wait_until(lambda: len(replica_actors(platform)) == 1, 30, what="the drained replicas gone")
    [survivor] = replica_actors(platform)
    assert set(replicas[MAX_REPLICAS:]) == {survivor}
