"""Placement on the shared Ray cluster: replicas ask Ray for the custom resources their agent
type declares (or their pool sets), so they land on the nodes that have them; a replica no
node can hold waits (which is what makes the Ray autoscaler add a node) while its tasks stay
queued, and it can be called off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray
from ray._private import state as ray_state

from actors.config import PoolConfig
from cluster.client import Client
from storage.messages import TaskStatus
from tests.support.platform import run_platform, wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def platform(ray_cluster, tmp_path_factory) -> Iterator[Client]:
    pools = {"sleeper": PoolConfig(replicas=1, resources={"ml": 1}),
             "flaky": PoolConfig(replicas=0, resources={"gpu_node": 1})}
    yield from run_platform("postgresql", tmp_path_factory.mktemp("placement"), pools=pools)


def actor_states(client: Client, agent_type: str) -> list[str]:
    """What Ray says of each replica actor of `agent_type` it still knows by name."""
    states = []
    for name in (r["name"] for r in pool(client, agent_type)["replicas"]):
        try:
            handle = ray.get_actor(name, namespace=client.config.namespace)
        except ValueError:
            continue
        states.append(ray_state.actors(handle._actor_id.hex())["State"])
    return states


def pool(client: Client, agent_type: str) -> dict:
    return next(p for p in client.status()["pools"] if p["agent_type"] == agent_type)


def free_ml() -> float:
    return ray.available_resources().get("ml", 0.0)


def test_replicas_take_the_custom_resources_their_pool_asks_for(platform):
    before = free_ml()
    platform.scale("sleeper", 3)
    wait_until(lambda: pool(platform, "sleeper")["live"] == 3, 60, what="three live replicas")
    wait_until(lambda: free_ml() == before - 2, 10, what="two more units of ml in use")
    platform.scale("sleeper", 1)
    wait_until(lambda: free_ml() == before, 30, what="the units given back")


def test_a_replica_no_node_can_hold_waits_and_its_tasks_stay_queued(platform):
    platform.scale("flaky", 1)
    wait_until(lambda: actor_states(platform, "flaky") == ["PENDING_CREATION"], 30,
               what="a replica waiting for a node with gpu_node")
    task_id = platform.submit("waits for its node", {"succeed_on": 1}, agent_type="flaky")

    waiting = pool(platform, "flaky")
    assert (waiting["desired"], waiting["live"]) == (1, 0)
    assert platform.wait(task_id, timeout_s=2).status is TaskStatus.QUEUED

    platform.scale("flaky", 0)
    wait_until(lambda: not pool(platform, "flaky")["replicas"], 30,
               what="the waiting replica called off")
    assert platform.get(task_id).status is TaskStatus.QUEUED  # accepted work is kept
    platform.cancel(task_id)
