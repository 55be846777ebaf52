"""Faults, and a seeded schedule of them.

`schedule(seed, ...)` draws from `random.Random(seed)` alone, so the same seed gives the same
faults at the same offsets: every requested kind once (in a seeded order), then more drawn at
random while time is left. `FaultInjector.inject(kind)` lands one fault now and returns a
`Fault` with its wall-clock start and end; one that could not land (no target alive, say) has
`error` set and is not counted as injected.

    process kills (SIGKILL): agent_replica_kill, orchestrator_kill, router_kill,
                             api_replica_kill, serve_proxy_kill
    storage restarts (SIGKILL, then start): postgres_restart, redis_restart
    network, through the fault proxies: {postgres,redis}_{reset,latency,black_hole}
    node loss: worker_node_removal (SIGKILL of every process of the worker node that hosts
               agent replicas, then a fresh worker node in its place)
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from cluster.chaos.proxy import FaultProxy
from cluster.chaos.services import PrivatePostgres, PrivateRedis
from cluster.chaos.worker_node import WorkerNodeError, WorkerNodes

PROCESS_KINDS = ("agent_replica_kill", "orchestrator_kill", "router_kill")
SERVE_KINDS = ("api_replica_kill", "serve_proxy_kill")
STORAGE_KINDS = ("postgres_restart", "redis_restart")
NETWORK_KINDS = tuple(f"{side}_{fault}" for side in ("postgres", "redis")
                      for fault in ("reset", "latency", "black_hole"))
NODE_KINDS = ("worker_node_removal",)
ALL_KINDS = PROCESS_KINDS + SERVE_KINDS + STORAGE_KINDS + NETWORK_KINDS + NODE_KINDS

LATENCY_S = 0.2
LATENCY_FOR_S = 5.0
BLACK_HOLE_S = 4.0
REFUSE_FOR_S = 1.0
MEAN_GAP_S = 10.0


@dataclasses.dataclass
class Fault:
    kind: str
    started_at: float
    ended_at: float
    target: str = ""
    error: str | None = None
    pools: list[str] = dataclasses.field(default_factory=list)  # agent types it hit, if known

    @property
    def injected(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def schedule(seed: int, duration_s: float, kinds: tuple[str, ...], first_at_s: float = 5.0,
             quiet_tail_s: float = 10.0) -> list[tuple[float, str]]:
    """(offset in seconds, kind) pairs within [first_at_s, duration_s - quiet_tail_s]: each of
    `kinds` once, in a seeded order, then more drawn at random, so that faults come about
    every `MEAN_GAP_S` seconds (closer when the window is short for the kinds)."""
    unknown = sorted(set(kinds) - set(ALL_KINDS))
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(ALL_KINDS)}")
    if not kinds:
        return []
    rng = random.Random(seed)
    window = duration_s - quiet_tail_s - first_at_s
    if window <= 0:
        raise ValueError(f"a run of {duration_s:g}s leaves no time for faults (they start at "
                         f"{first_at_s:g}s and stop {quiet_tail_s:g}s before the end)")
    order = list(kinds)
    rng.shuffle(order)
    extra = max(0, int(window // MEAN_GAP_S) - len(order))
    order += [rng.choice(kinds) for _ in range(extra)]
    gap = window / len(order)
    return [(round(first_at_s + i * gap + rng.uniform(0, gap * 0.5), 2), kind)
            for i, kind in enumerate(order)]


@dataclasses.dataclass
class Targets:
    """What faults land on: the platform's orchestrator handle, Ray namespace and state API
    (its head's dashboard), the private storage servers and the proxies the platform reaches
    them through."""

    orchestrator: Any
    namespace: str
    state_api: str  # the dashboard of this platform's own head: http://HOST:PORT
    postgres: PrivatePostgres
    redis: PrivateRedis
    postgres_proxy: FaultProxy
    redis_proxy: FaultProxy
    worker_nodes: WorkerNodes | None = None  # None: a single-node platform


class FaultInjector:
    def __init__(self, targets: Targets, seed: int) -> None:
        self.targets = targets
        self.rng = random.Random(seed + 1)
        self._handlers: dict[str, Callable[[], tuple[str, float]]] = {
            "agent_replica_kill": self._kill_replica,
            "orchestrator_kill": self._kill_orchestrator,
            "router_kill": lambda: self._kill_actor(name="router"),
            "api_replica_kill": lambda: self._kill_actor(class_prefix="ServeReplica:"),
            "serve_proxy_kill": lambda: self._kill_actor(class_prefix="ProxyActor"),
            "postgres_restart": lambda: self._restart(self.targets.postgres),
            "redis_restart": lambda: self._restart(self.targets.redis),
            "worker_node_removal": self._remove_worker_node,
        }
        self._pools: list[str] = []  # set by a handler that knows which pools it hit
        for side, proxy in (("postgres", targets.postgres_proxy),
                            ("redis", targets.redis_proxy)):
            self._handlers[f"{side}_reset"] = self._resetter(proxy)
            self._handlers[f"{side}_latency"] = self._slower(proxy)
            self._handlers[f"{side}_black_hole"] = self._black_holer(proxy)

    def inject(self, kind: str) -> Fault:
        started = time.time()
        self._pools = []
        try:
            target, lasts_s = self._handlers[kind]()
        except Exception as exc:  # the fault did not land; recorded, not counted
            return Fault(kind, started, time.time(), error=f"{type(exc).__name__}: {exc}")
        return Fault(kind, started, max(time.time(), started + lasts_s), target,
                     pools=self._pools)

    # ------------------------------------------------------------- processes

    def _kill_replica(self) -> tuple[str, float]:
        import ray

        pids = ray.get(self.targets.orchestrator.replica_pids.remote(), timeout=10)
        live = sorted((name, pid) for name, pid in pids.items() if pid)
        if not live:
            raise LookupError("no live agent replica")
        name, pid = self.rng.choice(live)
        _kill(pid)
        return f"{name} pid {pid}", 0.0

    def _kill_orchestrator(self) -> tuple[str, float]:
        import ray

        pid = ray.get(self.targets.orchestrator.pid.remote(), timeout=10)
        _kill(pid)
        return f"orchestrator pid {pid}", 0.0

    def _kill_actor(self, name: str | None = None,
                    class_prefix: str | None = None) -> tuple[str, float]:
        from ray.util.state import list_actors

        # always this platform's own head: with no address Ray picks "the latest" cluster
        actors = [a for a in list_actors(address=self.targets.state_api,
                                         filters=[("state", "=", "ALIVE")], limit=10_000)
                  if (name is None or (a.name == name
                                       and a.ray_namespace == self.targets.namespace))
                  and (class_prefix is None or a.class_name.startswith(class_prefix))
                  and a.pid]
        if not actors:
            raise LookupError(f"no live actor named {name or f'{class_prefix}*'}")
        actor = self.rng.choice(sorted(actors, key=lambda a: a.actor_id))
        _kill(actor.pid)
        return f"{actor.class_name} pid {actor.pid}", 0.0

    def _remove_worker_node(self) -> tuple[str, float]:
        """SIGKILL every process of the worker node, if it hosts an agent replica (else the
        fault does not land), then start a fresh node. The fault ends when the kill lands; a
        fresh node that does not join is named in the target, and the next removal starts one
        (without counting as landed)."""
        import ray

        nodes = self.targets.worker_nodes
        if nodes is None:
            raise LookupError("no worker node (the platform runs on one node)")
        if nodes.current is None:  # the last fresh node did not join: bring one back
            fresh = nodes.restore()
            raise LookupError(f"no worker node was running; started :{fresh.node_manager_port}")
        node = nodes.current
        replicas = ray.get(self.targets.orchestrator.replica_pids.remote(), timeout=10)
        on_node = set(node.processes())
        hosted = sorted(name for name, pid in replicas.items() if pid and pid in on_node)
        if not hosted:
            raise LookupError(f"the worker node :{node.node_manager_port} hosts no live "
                              "agent replica")
        self._pools = sorted({replica_pool(name) for name in hosted})
        target = f"node :{node.node_manager_port} with {', '.join(hosted)}"
        try:
            killed, fresh = nodes.replace()
        except WorkerNodeError as exc:
            return f"{target}; no fresh node: {str(exc)[:300]}", 0.0
        return (f"{target} ({len(killed)} processes); fresh node :{fresh.node_manager_port}",
                0.0)

    # ------------------------------------------------------------- storage

    @staticmethod
    def _restart(server: PrivatePostgres | PrivateRedis) -> tuple[str, float]:
        old = server.pid()
        server.restart()
        return f"{type(server).__name__} pid {old} -> {server.pid()}", 0.0

    # ------------------------------------------------------------- network

    @staticmethod
    def _resetter(proxy: FaultProxy) -> Callable[[], tuple[str, float]]:
        def reset() -> tuple[str, float]:
            aborted = proxy.reset(REFUSE_FOR_S)
            return f"{aborted} connections aborted", REFUSE_FOR_S

        return reset

    @staticmethod
    def _slower(proxy: FaultProxy) -> Callable[[], tuple[str, float]]:
        def slower() -> tuple[str, float]:
            proxy.set_latency(LATENCY_S)
            threading.Timer(LATENCY_FOR_S, proxy.set_latency, args=(0.0,)).start()
            return f"+{LATENCY_S:g}s each way for {LATENCY_FOR_S:g}s", LATENCY_FOR_S

        return slower

    @staticmethod
    def _black_holer(proxy: FaultProxy) -> Callable[[], tuple[str, float]]:
        def black_hole() -> tuple[str, float]:
            proxy.black_hole(BLACK_HOLE_S)
            return f"nothing forwarded for {BLACK_HOLE_S:g}s", BLACK_HOLE_S

        return black_hole


def replica_pool(name: str) -> str:
    """The agent type of a replica named `agent:<type>:<n>`."""
    parts = name.split(":")
    if len(parts) != 3 or parts[0] != "agent" or not parts[1]:
        raise ValueError(f"not an agent replica's name: {name!r}")
    return parts[1]


def _kill(pid: int | None) -> None:
    """SIGKILL one process (never a group: pid 0 or below is refused)."""
    if pid is None or pid <= 0 or pid == os.getpid():
        raise ValueError(f"refusing to kill pid {pid}")
    os.kill(pid, signal.SIGKILL)
