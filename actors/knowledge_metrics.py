"""The `knowledge` agent's metrics: documents and chunks ingested, search and answer latency,
collections loaded, reloaded and evicted, and the memory a replica's collections hold.

Inside Ray they are `ray.util.metrics` (exported on each node's metrics endpoint with Ray's
`ray_` prefix, like the model gateway's); outside Ray (unit tests, embedding) they are not
recorded. Ray is imported only when a Ray worker asks for them, so the agent never imports it.
Labels are tenants (a bounded set), operations and replica names; never queries, document names
or task ids. The catalogue is in docs/metrics.md.
"""

from __future__ import annotations

import sys
from typing import Any

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class KnowledgeMetrics:
    """What the agent records; this base records nothing."""

    def ingested(self, tenant: str, documents: int, chunks: int) -> None:
        """Documents (and their chunks) stored."""

    def searched(self, tenant: str, operation: str, seconds: float) -> None:
        """A search or answer served (retrieval time, loading included)."""

    def collection_loaded(self, tenant: str, reason: str) -> None:
        """A collection rebuilt from storage: reason `first_use` or `stale`."""

    def collections_evicted(self, count: int) -> None:
        """Collections dropped from memory to stay within the bound."""

    def memory_held(self, replica: str, held_bytes: int, collections: int) -> None:
        """What this replica's collections hold now."""


class RayKnowledgeMetrics(KnowledgeMetrics):
    """The metrics as `ray.util.metrics` (see the module)."""

    def __init__(self) -> None:
        from ray.util import metrics

        self._documents = metrics.Counter(
            "ymera_knowledge_documents_ingested_total", "Documents stored in a collection",
            tag_keys=("tenant",))
        self._chunks = metrics.Counter(
            "ymera_knowledge_chunks_ingested_total", "Chunks stored with their vectors",
            tag_keys=("tenant",))
        self._latency = metrics.Histogram(
            "ymera_knowledge_retrieval_duration_seconds", "Time to retrieve for a search or an "
            "answer (a load from storage included)", boundaries=list(LATENCY_BUCKETS_S),
            tag_keys=("operation",))
        self._loads = metrics.Counter(
            "ymera_knowledge_collection_loads_total", "Collections rebuilt from storage",
            tag_keys=("reason",))
        self._evictions = metrics.Counter(
            "ymera_knowledge_collection_evictions_total", "Collections evicted to stay within "
            "the memory bound")
        self._memory = metrics.Gauge(
            "ymera_knowledge_memory_bytes", "Estimated memory of the collections a replica "
            "holds", tag_keys=("replica",))
        self._loaded = metrics.Gauge(
            "ymera_knowledge_collections_loaded", "Collections a replica holds in memory",
            tag_keys=("replica",))

    def ingested(self, tenant: str, documents: int, chunks: int) -> None:
        self._documents.inc(documents, tags={"tenant": tenant})
        self._chunks.inc(chunks, tags={"tenant": tenant})

    def searched(self, tenant: str, operation: str, seconds: float) -> None:
        self._latency.observe(seconds, tags={"operation": operation})

    def collection_loaded(self, tenant: str, reason: str) -> None:
        self._loads.inc(1, tags={"reason": reason})

    def collections_evicted(self, count: int) -> None:
        if count > 0:
            self._evictions.inc(count)

    def memory_held(self, replica: str, held_bytes: int, collections: int) -> None:
        self._memory.set(held_bytes, tags={"replica": replica})
        self._loaded.set(collections, tags={"replica": replica})


def knowledge_metrics() -> KnowledgeMetrics:
    """Ray's metrics inside a Ray worker, else the recorder of nothing."""
    ray: Any = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return KnowledgeMetrics()
    try:
        return RayKnowledgeMetrics()
    except Exception:  # metrics must never cost the agent its work
        return KnowledgeMetrics()
