"""What the orchestrator is told at start: where to store, how big the pools, how patient, how
to route.

Built from the validated settings (`cluster/settings.py`) by the process that starts the platform,
and passed to the orchestrator actor, which keeps it across restarts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from actors.retry import RetryPolicy
from ml.config import RouterConfig


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """Overrides for one agent type's pool; None keeps what the agent type declares."""

    replicas: int | None = None
    num_cpus: float | None = None
    memory_mb: int | None = None
    concurrency: int | None = None


@dataclasses.dataclass(frozen=True)
class OrchestratorConfig:
    database_url: str
    namespace: str = "ymera"
    agent_modules: tuple[str, ...] = ()
    default_replicas: int | None = None  # None: each agent type's declared `replicas`
    pools: dict[str, PoolConfig] = dataclasses.field(default_factory=dict)
    default_timeout_s: float = 300.0
    max_timeout_s: float = 3600.0
    retry: RetryPolicy = RetryPolicy()
    queue_max: int = 10_000
    tenant_queue_max: int | None = None  # None: a tenant may fill the whole queue
    health_interval_s: float = 2.0
    health_timeout_s: float = 5.0
    max_payload_bytes: int = 1_000_000
    write_batch_max: int = 2000
    agent_settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    router: RouterConfig = RouterConfig()
    redis_url: str | None = None  # committed task events are published there (API streams)

    def pool(self, agent_type: str) -> PoolConfig:
        return self.pools.get(agent_type, PoolConfig())
