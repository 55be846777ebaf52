"""A Ray cluster of several nodes on this machine, for tests in which a node dies.

`ray.cluster_utils.Cluster` runs each node as its own set of processes on 127.0.0.1, so a
worker node can be killed as a machine would die. The head has no CPUs: nothing but what is
pinned to it (the orchestrator, which needs none) runs there, and agent replicas must go to
the worker nodes. Token auth is on, with the token a new local `ray.init()` would make; worker
processes import the test agents through the PYTHONPATH `tests/conftest.py` sets before any
node starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import ray
from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
from ray.cluster_utils import Cluster

LOOPBACK = "127.0.0.1"
NAMESPACE = "ymera-tests"


@contextlib.contextmanager
def multinode_cluster(worker_cpus: Sequence[int]) -> Iterator[Cluster]:
    """A connected cluster of a CPU-less head and one worker node per entry of `worker_cpus`;
    the driver is disconnected and every node stopped afterwards."""
    ray.shutdown()  # an earlier test of this process may have left its driver connected
    ensure_token_if_auth_enabled()
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=0, node_ip_address=LOOPBACK, include_dashboard=False))
    try:
        for cpus in worker_cpus:
            cluster.add_node(num_cpus=cpus, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False,
                 logging_level="WARNING")
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def alive_node_ids() -> set[str]:
    """The ids of the nodes Ray currently counts as alive."""
    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}
