"""A worker node of the chaos platform's own Ray cluster: a second raylet on 127.0.0.1, joined to
the platform's head (`cluster.chaos.node_main`, which does what `ray start --address=HEAD
--block` does) on ports of its own.

    node = WorkerNode(head_address)      # not started yet
    node.start()                         # returns once the node has joined
    pids = node.kill()                   # SIGKILL every process of this node; nothing else
    node.stop()                          # the same, quiet when it is gone already

The node offers `num_cpus` CPUs and the custom resource `RESOURCE`, so that a pool whose replicas
ask for it (`PoolConfig(resources={RESOURCE: 1})`) runs there and nowhere else. Its processes
are found without asking Ray: the launcher runs in a session of its own, so the node's
processes are that session's members (the launcher, the raylet) and every descendant of them
(the raylet's agents and workers). Neither `ray stop` nor a process of the
head or of another cluster is ever touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cluster.chaos.node_main import STARTED
from cluster.chaos.services import free_port

RESOURCE = "chaos_worker"
JOIN_TIMEOUT_S = 120.0
START_TRIES = 3
OBJECT_STORE_BYTES = 100 * 1024 * 1024


class WorkerNodeError(RuntimeError):
    """The worker node did not start or join in time."""


class WorkerNode:
    def __init__(self, head_address: str, num_cpus: int = 2, slots: int = 4) -> None:
        self.head_address = head_address
        self.num_cpus = num_cpus
        self.slots = slots
        self.node_manager_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None  # the launcher's output

    def params(self) -> dict[str, Any]:
        """The node's `RayParams`: the head to join, loopback, the pool's resource, and ports
        of its own (never the head's defaults, which a second raylet here would collide with)."""
        return {"gcs_address": self.head_address, "node_ip_address": "127.0.0.1",
                "num_cpus": self.num_cpus, "num_gpus": 0, "resources": {RESOURCE: self.slots},
                "node_manager_port": self.node_manager_port,
                "object_manager_port": free_port(), "metrics_export_port": free_port(),
                "dashboard_agent_listen_port": free_port(), "metrics_agent_port": free_port(),
                "runtime_env_agent_port": free_port(), "min_worker_port": 0,
                "max_worker_port": 0, "object_store_memory": OBJECT_STORE_BYTES,
                "include_log_monitor": False}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "cluster.chaos.node_main", json.dumps(self.params())]

    def start(self, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Start the node and wait until it has joined the head."""
        from cluster.local_ray import ray_env

        env = ray_env()
        self._log = Path(tempfile.mkstemp(prefix="ymera-chaos-node-", suffix=".log")[1])
        with open(self._log, "ab") as log:
            self._process = subprocess.Popen(self.command(), env=env, stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise WorkerNodeError(f"the worker node's launcher exited "
                                      f"({self._process.returncode}): {self._tail()}")
            if self.joined():
                return
            time.sleep(0.5)
        self.stop()
        raise WorkerNodeError(f"the worker node did not join {self.head_address} in "
                              f"{timeout_s:g}s: {self._tail()}")

    def joined(self) -> bool:
        """Whether the launcher has said the node runs (its raylet registered with the head)."""
        return STARTED in self._tail()

    def processes(self) -> list[int]:
        """Every live process of this node: its session's members and their descendants
        (zombies, dead but not yet reaped, are not)."""
        import psutil

        if self._process is None:
            return []
        session = self._process.pid
        members = []
        for process in psutil.process_iter():
            try:
                if (os.getsid(process.pid) == session
                        and process.status() != psutil.STATUS_ZOMBIE):
                    members.append(process)
            except (OSError, psutil.Error):
                continue
        found = {process.pid for process in members}
        for process in members:
            try:
                found.update(child.pid for child in process.children(recursive=True)
                             if child.status() != psutil.STATUS_ZOMBIE)
            except psutil.Error:
                pass
        return sorted(found)

    def kill(self) -> list[int]:
        """SIGKILL every process of the node at once (a machine that died); returns their pids."""
        pids = [pid for pid in self.processes() if pid > 0 and pid != os.getpid()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        _wait_dead(pids)
        return pids

    def stop(self) -> None:
        self.kill()
        if self._log is not None:
            self._log.unlink(missing_ok=True)

    def _tail(self) -> str:
        if self._log is None:
            return "(not started)"
        try:
            return self._log.read_text(errors="replace")[-1500:].strip() or "(no output)"
        except OSError:
            return "(no output)"


def _wait_dead(pids: list[int], timeout_s: float = 10.0) -> None:
    """Wait until every one of `pids` is gone or a zombie (dead, not yet reaped)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = 0
        for pid in pids:
            try:
                alive += psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                pass
        if not alive:
            return
        time.sleep(0.05)


class JoinWhenUp(threading.Thread):
    """Starts `node` as soon as its head's GCS port answers (while `cluster.platform.up` waits
    for the pools, some of which only this node can host), or, given `api_health` (the HTTP
    API's /health URL), once the API answers there: Serve starts an HTTP proxy on every node
    that hosts an API replica, and on one machine a second proxy cannot bind the API's port, so
    the API is placed before this node exists. `error` says why it did not join."""

    def __init__(self, node: WorkerNode, head_port: int, api_health: str | None = None,
                 timeout_s: float = 300.0) -> None:
        super().__init__(name="chaos-worker-node", daemon=True)
        self.node = node
        self.head_port = head_port
        self.api_health = api_health
        self.timeout_s = timeout_s
        self.error: BaseException | None = None
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        """Give up waiting (a node started already is the caller's to stop)."""
        self.cancelled.set()

    def run(self) -> None:
        from cluster.local_ray import head_is_running

        deadline = time.monotonic() + self.timeout_s
        try:
            while not (head_is_running(self.head_port) and self._api_answers()):
                if self.cancelled.is_set():
                    raise WorkerNodeError("cancelled before the node started")
                if time.monotonic() > deadline:
                    raise WorkerNodeError(f"no head answered on port {self.head_port}"
                                          + (f" (or no API at {self.api_health})"
                                             if self.api_health else ""))
                time.sleep(0.5)
            self.node.start(timeout_s=max(10.0, deadline - time.monotonic()))
        except BaseException as exc:  # reported to the harness, which stops the node
            self.error = exc

    def _api_answers(self) -> bool:
        if self.api_health is None:
            return True
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.api_health, timeout=2.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


class WorkerNodes:
    """The worker node the platform has now: `replace()` SIGKILLs it and starts a fresh one
    (so later faults have a target); `stop_all()` stops every node it started."""

    def __init__(self, first: WorkerNode) -> None:
        self.current: WorkerNode | None = first
        self.started = [first]

    def replace(self) -> tuple[list[int], WorkerNode]:
        """Kill the current node; start and return a fresh one on new ports (raises
        `WorkerNodeError` if none joins; there is then no current node until `restore`)."""
        if self.current is None:
            raise WorkerNodeError("no worker node is running")
        old = self.current
        killed = old.kill()
        self.current = None
        return killed, self.restore()

    def restore(self, tries: int = START_TRIES) -> WorkerNode:
        """Start a fresh node like the last one; a busy head may not register its raylet in
        time (Ray allows 30 s), so a node that fails is stopped and another tried."""
        template = self.started[-1]
        for attempt in range(1, tries + 1):
            fresh = type(template)(template.head_address, template.num_cpus, template.slots)
            self.started.append(fresh)
            try:
                fresh.start()
            except WorkerNodeError:
                fresh.stop()
                if attempt == tries:
                    raise
                continue
            self.current = fresh
            return fresh
        raise AssertionError("unreachable")

    def stop_all(self) -> None:
        for node in self.started:
            node.stop()
