"""What the orchestrator is told at start: where to store, how big the pools, how patient, how
to route.

Built from the validated settings (`cluster/settings.py`) by the process that starts the platform,
and passed to the orchestrator actor, which keeps it across restarts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from actors.retry import RetryPolicy
from ml.config import RouterConfig
from ml.llm.settings import LlmSettings
from storage.workflow_spec import WorkflowLimits

DEFAULT_NAMESPACE = "ymera"
"""The Ray namespace the platform's named actors live in unless settings choose another."""


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """Overrides for one agent type's pool; None keeps what the agent type declares.

    A pool autoscales between `min_replicas` and `max_replicas` (see `actors.autoscaler`):
    `min_replicas` defaults to `replicas` (or the agent type's declared count) and
    `max_replicas` to `min_replicas`, so a pool given only `replicas` keeps exactly that many.
    `target_backlog` is how many tasks (queued plus running) one replica should carry before
    the pool grows; it defaults to the pool's concurrency. `resources` are custom Ray resources
    each replica needs (for example `{"ml": 1}`), replacing what the agent type declares.

    This is also what settings parse `YMERA_POOLS` into (`cluster.settings`): a value out of its
    range, bounds out of order or an unknown field is refused with a message naming the field.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    replicas: int | None = None
    num_cpus: float | None = None
    memory_mb: int | None = None
    concurrency: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_backlog: int | None = None
    resources: dict[str, float] | None = None

    def __post_init__(self) -> None:
        for name, (low, high) in _POOL_RANGES.items():
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and low <= value <= high):
                bound = f"at least {low:g}" if high == math.inf else f"from {low:g} to {high:g}"
                raise ValueError(f"{name} must be a number {bound}, got {value}")
        fewest = self.min_replicas if self.min_replicas is not None else self.replicas
        if fewest is not None and self.max_replicas is not None and fewest > self.max_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas "
                             f"or replicas ({fewest})")
        if any(amount <= 0 for amount in (self.resources or {}).values()):
            raise ValueError("every custom resource amount must be above 0")


_POOL_RANGES = {"replicas": (0, 256), "num_cpus": (0, math.inf), "memory_mb": (1, math.inf),
                "concurrency": (1, 1000), "min_replicas": (0, 256), "max_replicas": (0, 256),
                "target_backlog": (1, 100_000)}


@dataclasses.dataclass(frozen=True)
class AutoscaleConfig:
    """How quickly autoscaled pools follow their backlog: a pool grows once its backlog has
    wanted more replicas for `upscale_delay_s`, and shrinks once it has wanted fewer for
    `downscale_delay_s` (the idle period). Both are checked every `health_interval_s`."""

    upscale_delay_s: float = 0.0
    downscale_delay_s: float = 60.0


@dataclasses.dataclass(frozen=True)
class WebhookSettings:
    """How events go out (`actors.webhook_delivery`): a delivery is retried with exponential
    backoff and full jitter from `retry_base_s` up to `retry_max_s` (or as long as the
    receiver's Retry-After asks, within that bound) until `retry_period_s` after its event, then
    fails; each attempt waits at most `timeout_s`; at most `max_in_flight` are sent at once.
    Receivers must have public addresses unless `allow_private_networks`, or their address lies
    in `allowed_networks` (CIDR strings). Due deliveries are looked for every `poll_interval_s`
    and whenever the orchestrator commits events."""

    retry_period_s: float = 86_400.0
    retry_base_s: float = 5.0
    retry_max_s: float = 3600.0
    timeout_s: float = 10.0
    max_in_flight: int = 32
    allow_private_networks: bool = False
    allowed_networks: tuple[str, ...] = ()
    poll_interval_s: float = 0.25

    def __post_init__(self) -> None:
        for name in ("retry_period_s", "retry_base_s", "retry_max_s", "timeout_s",
                     "poll_interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number above 0, got {value}")
        if self.retry_max_s < self.retry_base_s:
            raise ValueError(f"retry_max_s ({self.retry_max_s:g}) is below retry_base_s "
                             f"({self.retry_base_s:g})")
        if not 1 <= self.max_in_flight <= 10_000:
            raise ValueError(f"max_in_flight must be from 1 to 10000, got {self.max_in_flight}")


@dataclasses.dataclass(frozen=True)
class OrchestratorConfig:
    database_url: str
    namespace: str = DEFAULT_NAMESPACE
    agent_modules: tuple[str, ...] = ()
    default_replicas: int | None = None  # None: each agent type's declared `replicas`
    pools: dict[str, PoolConfig] = dataclasses.field(default_factory=dict)
    default_timeout_s: float = 300.0
    max_timeout_s: float = 3600.0
    retry: RetryPolicy = RetryPolicy()
    queue_max: int = 10_000
    tenant_queue_max: int | None = None  # None: a tenant may fill the whole queue
    autoscale: AutoscaleConfig = AutoscaleConfig()
    replica_start_timeout_s: float = 600.0  # a replica may wait this long for a node
    health_interval_s: float = 2.0
    health_timeout_s: float = 5.0
    max_payload_bytes: int = 1_000_000
    max_payload_depth: int = 64  # JSON nesting of payloads and results (storage.storable)
    write_batch_max: int = 2000
    agent_settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    router: RouterConfig = RouterConfig()
    redis_url: str | None = None  # committed task events are published there (API streams)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    log_format: str = "auto"  # auto | json | text (see actors/logs.py)
    log_level: str = "INFO"
    workflow_limits: WorkflowLimits = WorkflowLimits()  # enforced when a run is submitted
    workflow_retention_s: float = 30 * 24 * 3600.0  # finished runs older than this are purged
    workflow_purge_interval_s: float = 3600.0  # how often the orchestrator purges them
    llm: LlmSettings | None = None  # the model gateway; None: no model, no `llm` agent type
    webhooks: WebhookSettings = WebhookSettings()  # events out (webhooks and task callbacks)

    def pool(self, agent_type: str) -> PoolConfig:
        return self.pools.get(agent_type, PoolConfig())
