"""Pools of agent replicas, one pool per agent type, kept at strength by `update()`.

A replica is a detached, named actor (`agent:<type>:<n>`, n never reused), so it outlives an
orchestrator restart; on start the pools re-attach to the replicas Ray still has and replace
the ones it does not. Dispatch picks the least-loaded live replica with a free slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from actors.agent import Agent
from actors.config import OrchestratorConfig
from actors.errors import CallTimedOut
from storage.messages import AgentContext, Resources

log = logging.getLogger(__name__)

REPLICA_PREFIX = "agent:"
FAILED_START_BACKOFF_S = (1.0, 30.0)
REPLICA_START_TIMEOUT_S = 120.0
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


def _first_set(*values: int | None) -> int:
    return next(v for v in values if v is not None)


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


class AgentPool:
    """The replicas of one agent type."""

    def __init__(self, agent_class: type[Agent], replicas: int, resources: Resources,
                 concurrency: int) -> None:
        self.agent_class = agent_class
        self.agent_type = agent_class.spec.name
        self.desired = replicas
        self.resources = resources
        self.concurrency = concurrency
        self.replicas: dict[str, Replica] = {}
        self.next_number = 0
        self.restarts = 0
        self.failed_starts = 0
        self.start_blocked_until = 0.0

    def pick(self) -> Replica | None:
        """The live replica with the fewest attempts in flight, if any has a free slot."""
        best = None
        for replica in self.replicas.values():
            if replica.ready and not replica.suspect and replica.in_flight < self.concurrency:
                if best is None or replica.in_flight < best.in_flight:
                    best = replica
        return best

    def live_count(self) -> int:
        return sum(1 for r in self.replicas.values() if r.ready and not r.suspect)

    def snapshot(self) -> dict[str, Any]:
        return {
            "agent_type": self.agent_type,
            "desired": self.desired,
            "live": self.live_count(),
            "concurrency": self.concurrency,
            "restarts": self.restarts,
            "replicas": [
                {"name": r.name, "ready": r.ready, "in_flight": r.in_flight, "pid": r.pid,
                 "completed": r.completed}
                for r in sorted(self.replicas.values(), key=lambda r: r.name)
            ],
        }


class PoolManager:
    """Creates, health-checks and replaces replicas so each pool stays at its desired size."""

    def __init__(self, backend: Any, agent_types: dict[str, type[Agent]],
                 config: OrchestratorConfig) -> None:
        self.backend = backend
        self.config = config
        self.pools: dict[str, AgentPool] = {}
        for name, agent_class in agent_types.items():
            override = config.pool(name)
            declared = agent_class.spec.resources
            resources = Resources(
                num_cpus=override.num_cpus if override.num_cpus is not None else declared.num_cpus,
                memory_mb=override.memory_mb or declared.memory_mb,
                custom=declared.custom,
            )
            self.pools[name] = AgentPool(
                agent_class,
                _first_set(override.replicas, config.default_replicas,
                           agent_class.spec.replicas),
                resources,
                override.concurrency or agent_class.spec.concurrency,
            )
        self.on_change: Any = None
        self._starting: set[str] = set()
        self._background: set[asyncio.Task] = set()

    def attach(self) -> None:
        """Adopt the replicas Ray still runs; kill those of unknown types."""
        for name, handle in self.backend.find_actors(REPLICA_PREFIX).items():
            parsed = parse_replica_name(name)
            pool = self.pools.get(parsed[0]) if parsed else None
            if pool is None:
                log.warning("killing replica %s of an agent type no longer registered", name)
                self.backend.kill(handle)
                continue
            pool.replicas[name] = Replica(name, handle, pool.agent_type)
            pool.next_number = max(pool.next_number, parsed[1] + 1)
        log.info("re-attached %d replicas",
                 sum(len(p.replicas) for p in self.pools.values()))

    def replica_lost(self, agent_type: str, name: str) -> None:
        """Forget a replica known to be dead; `update()` replaces it."""
        pool = self.pools.get(agent_type)
        replica = pool.replicas.pop(name, None) if pool else None
        if replica is not None:
            pool.restarts += 1
            self.backend.kill(replica.handle)
            log.warning("replica %s lost; replacing it", name)

    def mark_suspect(self, agent_type: str, name: str) -> None:
        """Take a replica out of dispatch until its next health check clears it."""
        pool = self.pools.get(agent_type)
        if pool and name in pool.replicas:
            pool.replicas[name].suspect = True

    async def update(self) -> None:
        """One supervision step: check every replica, replace the dead, fill up to strength.

        Live replicas are checked together within the health timeout; a starting replica is
        awaited in the background (its agent's setup may take long) and joins when ready.
        """
        checks = []
        for pool in self.pools.values():
            for replica in list(pool.replicas.values()):
                if replica.ready:
                    checks.append(self._check(pool, replica, self.config.health_timeout_s))
                elif replica.name not in self._starting:
                    self._starting.add(replica.name)
                    task = asyncio.create_task(self._start(pool, replica))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
        if checks:
            await asyncio.gather(*checks)
        for pool in self.pools.values():
            self._fill(pool)

    async def _start(self, pool: AgentPool, replica: Replica) -> None:
        try:
            await self._check(pool, replica, REPLICA_START_TIMEOUT_S)
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
        replica.completed = health.get("completed", 0)
        if self.on_change:
            self.on_change()

    def _failed(self, pool: AgentPool, replica: Replica, exc: BaseException) -> None:
        if pool.replicas.pop(replica.name, None) is None:
            return
        if replica.ready:
            pool.restarts += 1
            log.warning("replica %s failed its health check (%s); replacing it", replica.name, exc)
        else:
            pool.failed_starts += 1
            low, high = FAILED_START_BACKOFF_S
            pool.start_blocked_until = time.monotonic() + min(high, low * 2**pool.failed_starts)
            log.error("replica %s could not start (%s); retrying later", replica.name, exc)
        self.backend.kill(replica.handle)

    def _fill(self, pool: AgentPool) -> None:
        if time.monotonic() < pool.start_blocked_until:
            return
        surplus = len(pool.replicas) - pool.desired
        for replica in sorted(pool.replicas.values(), key=lambda r: r.in_flight)[:max(surplus, 0)]:
            if replica.in_flight == 0:
                pool.replicas.pop(replica.name)
                self.backend.kill(replica.handle)
        while len(pool.replicas) < pool.desired:
            name = replica_name(pool.agent_type, pool.next_number)
            pool.next_number += 1
            context = AgentContext(name, self.config.namespace, self.config.database_url,
                                   dict(self.config.agent_settings))
            handle = self.backend.create_replica(
                name, pool.agent_class, pool.resources, pool.concurrency, context,
                self.config.max_payload_bytes,
            )
            pool.replicas[name] = Replica(name, handle, pool.agent_type)

    def snapshot(self) -> list[dict[str, Any]]:
        return [pool.snapshot() for pool in self.pools.values()]
