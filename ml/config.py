"""What the router actor is told at start: whether to route, how strictly, and what to learn.

Built from the validated settings (`cluster/settings.py`) and carried in the orchestrator's
config; the router actor keeps it across restarts.
"""

from __future__ import annotations

import dataclasses

from ml.decision import RoutingPolicy


# The custom Ray resource of the nodes meant for machine-learning work (the memory-heavy
# `ml_worker` type of cluster.yaml). The router and the learning and text-analysis agents ask
# for one unit each, so they are placed there, and the autoscaler adds such a node when they
# wait. A local head started by `ymera up` advertises some (`YMERA_HEAD_RESOURCES`).
ML_RESOURCE = {"ml": 1.0}


@dataclasses.dataclass(frozen=True)
class RouterConfig:
    """`enabled` false means tasks must name their agent type. `min_similarity` and
    `min_confidence` override the policy's "no confident route" thresholds (as
    `ymera route --calibrate` fits them); `fallback_agent_type` takes the tasks no type is a
    confident match for, which otherwise fail with `no_confident_route`."""

    enabled: bool = True
    min_similarity: float | None = None
    min_confidence: float | None = None
    fallback_agent_type: str | None = None
    learn: bool = True
    learn_min_confidence: float = 0.8
    max_learned_per_type: int = 1000
    # How many tenants' stored examples the router keeps indexed in memory, counted in examples
    # (plus one per tenant); the least recently used tenants beyond it are dropped and reloaded
    # from storage on their next use (`ml.tenant_examples`).
    tenant_cache_examples: int = 50_000
    stats_window_s: float = 3600.0
    stats_interval_s: float = 15.0
    decision_timeout_s: float = 120.0
    batch_max: int = 64
    num_cpus: float = 0.0  # like the orchestrator: scheduled anywhere; Ray gives it one torch thread
    # Custom resources the router asks for (it needs the embedding model's memory); ignored
    # with the embedded SQLite database, whose file pins the router to the head node.
    resources: dict[str, float] = dataclasses.field(default_factory=lambda: dict(ML_RESOURCE))

    def policy(self) -> RoutingPolicy:
        default = RoutingPolicy()
        return dataclasses.replace(
            default,
            min_similarity=(default.min_similarity if self.min_similarity is None
                            else self.min_similarity),
            min_confidence=(default.min_confidence if self.min_confidence is None
                            else self.min_confidence),
        )
