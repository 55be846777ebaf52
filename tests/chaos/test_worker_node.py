"""The worker node of the chaos platform: it joins its own head on ports of its own with the
resource that places a pool there, and its kill reaches every process of its session (and their
children) and nothing else; a removal that would not hit a replica does not count as landed."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from ray._private.parameter import RayParams

from cluster.chaos.faults import FaultInjector
from cluster.chaos.worker_node import RESOURCE, WorkerNode, WorkerNodeError, WorkerNodes


def test_the_node_joins_its_head_with_the_pool_resource_on_ports_of_its_own() -> None:
    node = WorkerNode("127.0.0.1:41234", num_cpus=2, slots=4)
    command = node.command()
    assert command[:3] == [sys.executable, "-m", "cluster.chaos.node_main"]
    params = json.loads(command[3])
    assert params["gcs_address"] == "127.0.0.1:41234"
    assert params["node_ip_address"] == "127.0.0.1"
    assert (params["num_cpus"], params["resources"]) == (2, {RESOURCE: 4})
    assert params["node_manager_port"] == node.node_manager_port
    ports = [params[name] for name in (
        "node_manager_port", "object_manager_port", "metrics_export_port",
        "dashboard_agent_listen_port", "metrics_agent_port", "runtime_env_agent_port")]
    assert all(ports) and len(set(ports)) == len(ports)  # never the head's, never each other
    RayParams(**params)  # Ray takes every one of them


class _Sleepers(WorkerNode):
    """A stand-in node: a shell in a session of its own with a child and a grandchild."""

    def command(self) -> list[str]:
        return ["sh", "-c", "sleep 300 & sh -c 'sleep 300' & echo 'Ray runtime started'; wait"]


def test_kill_reaches_the_whole_session_and_nothing_else() -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    node = _Sleepers("127.0.0.1:1")
    try:
        node.start(timeout_s=10)
        assert node.joined()
        members = node.processes()
        assert len(members) >= 3 and bystander.pid not in members
        assert sorted(node.kill()) == members
        assert node.processes() == []
        assert bystander.poll() is None
    finally:
        node.stop()
        bystander.kill()
        bystander.wait()


def _injector(nodes: WorkerNodes | None, replica_pids: dict[str, int]) -> FaultInjector:
    orchestrator = SimpleNamespace(replica_pids=SimpleNamespace(remote=lambda: replica_pids))
    targets: Any = SimpleNamespace(orchestrator=orchestrator, worker_nodes=nodes,
                                   postgres_proxy=None, redis_proxy=None)
    return FaultInjector(targets, seed=1)


@pytest.fixture
def ray_get(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setattr(ray, "get", lambda value, timeout=None: value)


@pytest.mark.usefixtures("ray_get")
def test_a_removal_lands_only_on_a_node_that_hosts_a_replica() -> None:
    fault = _injector(None, {}).inject("worker_node_removal")
    assert not fault.injected and "no worker node" in str(fault.error)

    node = _Sleepers("127.0.0.1:1")
    nodes = WorkerNodes(node)
    try:
        node.start(timeout_s=10)
        fault = _injector(nodes, {"agent:calculator:1": 1}).inject("worker_node_removal")
        assert not fault.injected and "hosts no live agent replica" in str(fault.error)
        assert node.processes(), "a removal that does not land kills nothing"
    finally:
        nodes.stop_all()


class _SlowToRegister(_Sleepers):
    """Every other node fails to join, as a raylet the busy head did not register in time."""

    starts = 0

    def command(self) -> list[str]:
        _SlowToRegister.starts += 1
        if _SlowToRegister.starts % 2 == 0:
            return ["sh", "-c", "echo 'timed out during startup'; exit 1"]
        return super().command()


def test_a_removed_node_is_replaced_and_a_fresh_node_that_fails_is_tried_again() -> None:
    first = _SlowToRegister("127.0.0.1:1")
    nodes = WorkerNodes(first)
    try:
        first.start(timeout_s=10)
        killed, fresh = nodes.replace()  # the second start fails, the third joins
        assert killed and first.processes() == []
        assert fresh is nodes.current and fresh.joined() and fresh.processes()
        assert len(nodes.started) == 3 and not nodes.started[1].processes()
        nodes.current.kill()
        nodes.current = None
        with pytest.raises(WorkerNodeError, match="launcher exited"):
            nodes.restore(tries=1)  # the fourth start fails, and there is no other try
        assert nodes.current is None
    finally:
        nodes.stop_all()
