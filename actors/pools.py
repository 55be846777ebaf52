"""Pools of agent replicas, one pool per agent type, kept at strength by `update()`.

A replica is a detached, named actor (`agent:<type>:<n>`, n never reused), so it outlives an
orchestrator restart; on start the pools re-attach to the replicas Ray still has and replace
the ones it does not. Dispatch picks the least-loaded live replica with a free slot.

Each step also sizes every pool to its backlog within its bounds (`actors.autoscaler`). A
replica the pool no longer needs is drained: it gets no new work and stops once its last
attempt is over, so scaling down interrupts no task. A replica that asks for resources no node
has waits (up to `replica_start_timeout_s`) while the Ray autoscaler adds a node for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

from actors.agent import Agent
from actors.autoscaler import Autoscaler, wanted_replicas
from actors.config import OrchestratorConfig, PoolConfig
from actors.errors import CallTimedOut
from actors.metrics import OrchestratorMetrics
from storage.errors import InvalidRequest
from storage.messages import AgentContext, Resources

log = logging.getLogger(__name__)

REPLICA_PREFIX = "agent:"
FAILED_START_BACKOFF_S = (1.0, 30.0)
MAX_REPLICAS = 256
# A live replica is replaced after this many health checks in a row go unanswered (one slow
# answer on a busy machine is not a hang); a dead one is replaced at once.
MISSED_CHECKS_TO_REPLACE = 2


def replica_name(agent_type: str, number: int) -> str:
    return f"{REPLICA_PREFIX}{agent_type}:{number}"


def parse_replica_name(name: str) -> tuple[str, int] | None:
    prefix, _, rest = name.partition(":")
    agent_type, _, number = rest.rpartition(":")
    if prefix + ":" != REPLICA_PREFIX or not agent_type or not number.isdigit():
        return None
    return agent_type, int(number)


@dataclasses.dataclass
class Replica:
    name: str
    handle: Any
    agent_type: str
    ready: bool = False
    in_flight: int = 0
    completed: int = 0
    pid: int | None = None
    created_at: float = dataclasses.field(default_factory=time.monotonic)
    suspect: bool = False
    missed_checks: int = 0
    draining: bool = False  # no new work; stopped once in_flight is 0
    node_id: str | None = None

    @property
    def number(self) -> int:
        return int(self.name.rpartition(":")[2])


class AgentPool:
    """The replicas of one agent type, and how many it should have."""

    def __init__(self, agent_class: type[Agent], min_replicas: int, max_replicas: int,
                 resources: Resources, concurrency: int, target_backlog: int) -> None:
        self.agent_class = agent_class
        self.agent_type = agent_class.spec.name
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.configured_bounds = (min_replicas, max_replicas)
        self.bounds_set_by = "config"  # or "operator" (`PoolManager.set_size`)
        self.desired = min_replicas
        self.resources = resources
        self.concurrency = concurrency
        self.target_backlog = target_backlog
        self.replicas: dict[str, Replica] = {}
        self.next_number = 0
        self.restarts = 0
        self.failed_starts = 0
        self.start_blocked_until = 0.0
        self.queued = 0  # as of the last autoscaling step

    def set_bounds(self, min_replicas: int, max_replicas: int) -> None:
        """New bounds; the desired size moves into them at once."""
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.desired = max(min_replicas, min(max_replicas, self.desired))

    def pick(self) -> Replica | None:
        """The live replica with the fewest attempts in flight, if any has a free slot."""
        best = None
        for replica in self.replicas.values():
            if (replica.ready and not replica.suspect and not replica.draining
                    and replica.in_flight < self.concurrency):
                if best is None or replica.in_flight < best.in_flight:
                    best = replica
        return best

    def live_count(self) -> int:
        """Replicas that take work: ready, answering, and not draining."""
        return sum(1 for r in self.replicas.values()
                   if r.ready and not r.suspect and not r.draining)

    def running(self) -> int:
        return sum(r.in_flight for r in self.replicas.values())

    def snapshot(self) -> dict[str, Any]:
        return {
            "agent_type": self.agent_type,
            "desired": self.desired,
            "live": self.live_count(),
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "bounds_set_by": self.bounds_set_by,
            "target_backlog": self.target_backlog,
            "concurrency": self.concurrency,
            "restarts": self.restarts,
            "queued": self.queued,
            "draining": sum(1 for r in self.replicas.values() if r.draining),
            "replicas": [
                {"name": r.name, "ready": r.ready, "in_flight": r.in_flight, "pid": r.pid,
                 "completed": r.completed, "draining": r.draining, "node_id": r.node_id}
                for r in sorted(self.replicas.values(), key=lambda r: r.number)
            ],
        }


def pool_bounds(override: PoolConfig, default_replicas: int | None,
                declared_replicas: int) -> tuple[int, int]:
    """(min, max) replicas of a pool from its configuration: `min_replicas`, else `replicas`,
    else the platform's default, else what the agent type declares; `max_replicas`, else
    the minimum (a fixed size)."""
    low = next(v for v in (override.min_replicas, override.replicas, default_replicas,
                           declared_replicas) if v is not None)
    high = override.max_replicas if override.max_replicas is not None else low
    return low, max(low, high)


def requested_bounds(pool: AgentPool, replicas: int | None, min_replicas: int | None,
                     max_replicas: int | None) -> tuple[int, int]:
    """The (min, max) an operator asks for: `replicas` pins the pool; `min_replicas` and/or
    `max_replicas` change its bounds (the one not given stays). `InvalidRequest` says what is
    wrong with a request."""
    for name, value in (("replicas", replicas), ("min_replicas", min_replicas),
                        ("max_replicas", max_replicas)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= MAX_REPLICAS):
            raise InvalidRequest(f"{name} must be an integer from 0 to {MAX_REPLICAS}")
    if replicas is not None:
        if min_replicas is not None or max_replicas is not None:
            raise InvalidRequest("give either replicas (a fixed size) or "
                                 "min_replicas/max_replicas (autoscaling bounds), not both")
        return replicas, replicas
    if min_replicas is None and max_replicas is None:
        raise InvalidRequest("give replicas, or min_replicas and/or max_replicas")
    low = pool.min_replicas if min_replicas is None else min_replicas
    high = pool.max_replicas if max_replicas is None else max_replicas
    if low > high:
        raise InvalidRequest(f"min_replicas ({low}) is above max_replicas ({high})")
    return low, high


class PoolManager:
    """Creates, health-checks and replaces replicas so each pool stays at its desired size."""

    def __init__(self, backend: Any, agent_types: dict[str, type[Agent]],
                 config: OrchestratorConfig, metrics: OrchestratorMetrics | None = None) -> None:
        self.backend = backend
        self.config = config
        self.metrics = metrics or OrchestratorMetrics()
        self.pools: dict[str, AgentPool] = {}
        for name, agent_class in agent_types.items():
            override = config.pool(name)
            declared = agent_class.spec.resources
            resources = Resources(
                num_cpus=override.num_cpus if override.num_cpus is not None else declared.num_cpus,
                memory_mb=override.memory_mb or declared.memory_mb,
                custom=dict(override.resources if override.resources is not None
                            else declared.custom),
            )
            concurrency = override.concurrency or agent_class.spec.concurrency
            low, high = pool_bounds(override, config.default_replicas,
                                    agent_class.spec.replicas)
            self.pools[name] = AgentPool(agent_class, low, high, resources, concurrency,
                                         override.target_backlog or concurrency)
        self.autoscaler = Autoscaler(config.autoscale)
        self.on_change: Any = None
        self._starting: set[str] = set()
        self._background: set[asyncio.Task] = set()

    def apply_operator_bounds(self, saved: Mapping[str, tuple[int, int]]) -> None:
        """Give pools the bounds operators set before this orchestrator started (stored;
        see `storage.pool_bounds`). Call before `attach`, which sizes pools within them."""
        for agent_type, (low, high) in saved.items():
            if agent_type not in self.pools:
                log.warning("ignoring stored bounds of %s, an agent type not registered",
                            agent_type)
                continue
            self.set_size(agent_type, low, high)
            log.info("pool %s keeps the bounds an operator set: %d..%d", agent_type, low, high)

    def attach(self) -> None:
        """Adopt the replicas Ray still runs; kill those of unknown types. An autoscaled pool
        keeps the size it had grown to (within its bounds), to shrink after the idle period
        like any other, instead of stopping replicas the moment the orchestrator restarts."""
        for name, handle in self.backend.find_actors(REPLICA_PREFIX).items():
            parsed = parse_replica_name(name)
            pool = self.pools.get(parsed[0]) if parsed else None
            if parsed is None or pool is None:
                log.warning("killing replica %s of an agent type no longer registered", name)
                self.backend.kill(handle)
                continue
            pool.replicas[name] = Replica(name, handle, pool.agent_type)
            # Awaited from now, not from the next supervision step (`health_interval_s`
            # later): a pool is live as soon as its replica answers.
            self._await_start(pool, pool.replicas[name])
            pool.next_number = max(pool.next_number, parsed[1] + 1)
        for pool in self.pools.values():
            pool.desired = max(pool.min_replicas, min(pool.max_replicas, len(pool.replicas)))
        log.info("re-attached %d replicas",
                 sum(len(p.replicas) for p in self.pools.values()))

    def replica_lost(self, agent_type: str, name: str) -> None:
        """Forget a replica known to be dead; `update()` replaces it."""
        pool = self.pools.get(agent_type)
        if pool is None:
            return
        replica = pool.replicas.pop(name, None)
        if replica is not None:
            self._restarted(pool)
            self.backend.kill(replica.handle)
            log.warning("replica %s lost; replacing it", name)

    def mark_suspect(self, agent_type: str, name: str) -> None:
        """Take a replica out of dispatch until its next health check clears it."""
        pool = self.pools.get(agent_type)
        if pool and name in pool.replicas:
            pool.replicas[name].suspect = True

    async def update(self, queued: Mapping[str, int] | None = None) -> None:
        """One supervision step: check every replica, replace the dead, size each pool to its
        backlog (`queued` tasks per agent type, plus what its replicas are running), then
        start or drain replicas to match.

        Live replicas are checked together within the health timeout; a starting replica is
        awaited in the background (its agent's setup may take long, or it may wait for a
        node) and joins when ready.
        """
        checks = []
        for pool in self.pools.values():
            for replica in list(pool.replicas.values()):
                if replica.ready:
                    checks.append(self._check(pool, replica, self.config.health_timeout_s))
                else:
                    self._await_start(pool, replica)
        if checks:
            await asyncio.gather(*checks)
        for pool in self.pools.values():
            if queued is not None:
                self._autoscale(pool, queued.get(pool.agent_type, 0))
            self._fill(pool)

    def _autoscale(self, pool: AgentPool, queued: int) -> None:
        pool.queued = queued
        wanted = wanted_replicas(queued + pool.running(), pool.target_backlog,
                                 pool.min_replicas, pool.max_replicas)
        size = self.autoscaler.decide(pool.agent_type, pool.desired, wanted)
        if size is None:
            return
        direction = "up" if size > pool.desired else "down"
        log.info("scaling pool %s %s from %d to %d replicas (%d queued, %d running)",
                 pool.agent_type, direction, pool.desired, size, queued, pool.running())
        self.metrics.pool_scaled(pool.agent_type, direction)
        pool.desired = size

    def set_size(self, agent_type: str, min_replicas: int, max_replicas: int,
                 set_by: str = "operator") -> AgentPool:
        """Set a pool's bounds by hand (equal bounds pin its size)."""
        pool = self.pools[agent_type]
        pool.set_bounds(min_replicas, max_replicas)
        pool.bounds_set_by = set_by
        self.autoscaler.forget(agent_type)
        return pool

    def reset_size(self, agent_type: str) -> AgentPool:
        """Give a pool its configured bounds again."""
        return self.set_size(agent_type, *self.pools[agent_type].configured_bounds, "config")

    def _await_start(self, pool: AgentPool, replica: Replica) -> None:
        """Wait in the background for a starting replica to answer `ready` (once)."""
        if replica.name in self._starting:
            return
        self._starting.add(replica.name)
        task = asyncio.create_task(self._start(pool, replica))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _start(self, pool: AgentPool, replica: Replica) -> None:
        try:
            await self._check(pool, replica, self.config.replica_start_timeout_s)
        finally:
            self._starting.discard(replica.name)

    async def _check(self, pool: AgentPool, replica: Replica, timeout_s: float) -> None:
        method = "health" if replica.ready else "ready"
        call = self.backend.call(replica.handle, method, name=replica.name)
        try:
            health = await call.result(timeout_s)
        except CallTimedOut as exc:
            replica.missed_checks += 1
            if replica.ready and replica.missed_checks < MISSED_CHECKS_TO_REPLACE:
                replica.suspect = True  # out of dispatch until it answers again
                return
            self._failed(pool, replica, exc)
            return
        except Exception as exc:  # lost, or the agent's own health check raised
            self._failed(pool, replica, exc)
            return
        replica.missed_checks = 0
        if not replica.ready:
            pool.failed_starts = 0
        replica.ready = True
        replica.suspect = False
        replica.pid = health.get("pid")
        replica.node_id = health.get("node_id")
        replica.completed = health.get("completed", 0)
        if self.on_change:
            self.on_change()

    def _failed(self, pool: AgentPool, replica: Replica, exc: BaseException) -> None:
        if pool.replicas.pop(replica.name, None) is None:
            return
        if replica.ready:
            self._restarted(pool)
            log.warning("replica %s failed its health check (%s); replacing it", replica.name, exc)
        else:
            pool.failed_starts += 1
            low, high = FAILED_START_BACKOFF_S
            pool.start_blocked_until = time.monotonic() + min(high, low * 2**pool.failed_starts)
            log.error("replica %s could not start (%s); retrying later", replica.name, exc)
        self.backend.kill(replica.handle)

    def _restarted(self, pool: AgentPool) -> None:
        pool.restarts += 1
        self.metrics.replica_restarted(pool.agent_type)

    def _fill(self, pool: AgentPool) -> None:
        """Start or drain replicas so `desired` of them take work. Surplus replicas drain,
        those not yet started first; a draining replica is taken back before a new one is
        started; a drained one (nothing in flight) stops."""
        active = [r for r in pool.replicas.values() if not r.draining]
        draining = [r for r in pool.replicas.values() if r.draining]
        surplus = len(active) - pool.desired
        if surplus > 0:
            for replica in sorted(active, key=lambda r: (r.ready, r.in_flight, -r.number)
                                  )[:surplus]:
                replica.draining = True
                draining.append(replica)
        elif surplus < 0:
            for replica in sorted(draining, key=lambda r: -r.in_flight)[:-surplus]:
                replica.draining = False
                draining.remove(replica)
                active.append(replica)
        for replica in draining:
            if replica.in_flight == 0:
                pool.replicas.pop(replica.name)
                self.backend.kill(replica.handle)
        if time.monotonic() < pool.start_blocked_until:
            return
        for _ in range(pool.desired - len(active)):
            name = replica_name(pool.agent_type, pool.next_number)
            pool.next_number += 1
            context = AgentContext(name, self.config.namespace, self.config.database_url,
                                   {**self.config.agent_settings,
                                    "llm_configured": self.config.llm is not None},
                                   self.config.log_format,
                                   self.config.log_level, self.config.max_payload_depth)
            handle = self.backend.create_replica(
                name, pool.agent_class, pool.resources, pool.concurrency, context,
                self.config.max_payload_bytes,
            )
            pool.replicas[name] = Replica(name, handle, pool.agent_type)
            # Awaited from now, not from the next supervision step (`health_interval_s`
            # later): a pool is live as soon as its replica answers.
            self._await_start(pool, pool.replicas[name])

    def snapshot(self) -> list[dict[str, Any]]:
        return [pool.snapshot() for pool in self.pools.values()]
