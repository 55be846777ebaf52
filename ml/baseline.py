"""What the semantic router is measured against: simpler routers on the same encoder and texts.

Each baseline embeds the same texts as the router: every agent type's declared capabilities and
examples, and the task descriptions, all prepared by the router's `routing_text` and encoded by
the same `Embedder`. Each implements `ml.evaluation.BatchRouter`, so `evaluate` reports on it
and `calibrate` fits its "no route" thresholds the same way as the router's.

- `NearestCentroidRouter`: an agent type is the mean of its declared texts' embeddings; a task
  goes to the most similar centroid. `similarity` is that cosine; `confidence` its softmax share
  (at `policy.temperature`) among the centroids.
- `SemanticRouterLibrary`: the `IndexedRouter` of the `semantic-router` library (one route per
  agent type, its declared texts as utterances, the library's default mean of the top-5 hits per
  route). `similarity` is the library's score of the best route; `confidence` its softmax share.
  Optional: `pip install 'ymera[compare-router]'`.

Neither knows the out-of-scope phrases of `ml.out_of_scope`: they reject only by thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.decision import Decision, RoutingPolicy
from ml.example_index import declared_texts
from ml.semantic_router import AgentNameMask, instruction_text
from storage.errors import InvalidRequest
from storage.messages import AgentSpec

if TYPE_CHECKING:
    from ml.embeddings import Embedder

# "No route" thresholds fitted with `ml.evaluation.calibrate` on tests/data/routing_dev.jsonl
# for the built-in agents (`ymera route --calibrate` refits and stores them).
CENTROID_POLICY = RoutingPolicy(min_similarity=0.27, min_confidence=0.0)
LIBRARY_POLICY = RoutingPolicy(min_similarity=0.335, min_confidence=0.0)
LIBRARY_TOP_K = 5


def _prepare_for(agent_types: Mapping[str, AgentSpec]) -> Callable[[str], str]:
    mask = AgentNameMask(agent_types)
    return lambda text: mask(instruction_text(text))


def _shared_embedder(embedder: Embedder | None) -> Embedder:
    if embedder is not None:
        return embedder
    from ml.embeddings import embedder as shared_embedder

    return shared_embedder()


def scored_decision(scores: Mapping[str, float], policy: RoutingPolicy, method: str) -> Decision:
    """The decision for one task from a similarity per agent type: the best type, with its
    softmax share (at `policy.temperature`) as confidence, routed when both thresholds pass."""
    if not scores:
        return Decision(None, 0.0, 0.0, (), (), False, "no confident route: no agent types")
    best = max(scores.values())
    weights = {t: math.exp((s - best) / policy.temperature) for t, s in scores.items()}
    total = sum(weights.values())
    candidates = tuple(sorted(((t, w / total) for t, w in weights.items()),
                              key=lambda c: (-c[1], c[0])))
    chosen, confidence = candidates[0]
    similarity = scores[chosen]
    if similarity < policy.min_similarity:
        reason = (f"no confident route: {method} similarity {similarity:.3f} to {chosen}, "
                  f"below {policy.min_similarity:.3f}")
        return Decision(chosen, confidence, similarity, candidates, (), False, reason)
    if confidence < policy.min_confidence:
        reason = (f"no confident route: {chosen} has confidence {confidence:.3f}, below "
                  f"{policy.min_confidence:.3f}")
        return Decision(chosen, confidence, similarity, candidates, (), False, reason)
    return Decision(chosen, confidence, similarity, candidates, (), True,
                    f"{method}: similarity {similarity:.2f} to {chosen}")


class NearestCentroidRouter:
    """Routes a task to the agent type whose declared texts' mean embedding is most similar.

    `prepare` maps a text to what is embedded; pass the semantic router's `routing_text` (the
    default is the same preparation for `agent_types`)."""

    name = "nearest_centroid"

    def __init__(self, agent_types: Mapping[str, AgentSpec], embedder: Embedder | None = None,
                 policy: RoutingPolicy = CENTROID_POLICY,
                 prepare: Callable[[str], str] | None = None) -> None:
        self.embedder = _shared_embedder(embedder)
        self.policy = policy
        self.prepare = prepare or _prepare_for(agent_types)
        self.agent_types = tuple(agent_types)
        texts = {name: declared_texts(spec) for name, spec in agent_types.items()}
        vectors = self.embedder.encode([self.prepare(t) for group in texts.values() for t in group])
        centroids, start = [], 0
        for group in texts.values():
            mean = vectors[start:start + len(group)].mean(axis=0)
            centroids.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
            start += len(group)
        self.centroids = np.stack(centroids) if centroids else np.zeros((0, vectors.shape[1]))

    def decide_many(self, descriptions: Sequence[str],
                    policy: RoutingPolicy | None = None) -> list[Decision]:
        policy = policy or self.policy
        if not descriptions:
            return []
        queries = self.embedder.encode([self.prepare(d) for d in descriptions])
        similarities = queries @ self.centroids.T
        return [scored_decision(dict(zip(self.agent_types, map(float, row))), policy, "centroid")
                for row in similarities]


class SemanticRouterLibrary:
    """The `semantic-router` library's `IndexedRouter` over the agents' declared texts, encoding
    with our `Embedder` and `prepare`. Raises `InvalidRequest` when the library is missing."""

    name = "semantic_router_library"

    def __init__(self, agent_types: Mapping[str, AgentSpec], embedder: Embedder | None = None,
                 policy: RoutingPolicy = LIBRARY_POLICY,
                 prepare: Callable[[str], str] | None = None, top_k: int = LIBRARY_TOP_K) -> None:
        try:
            from semantic_router import IndexedRouter, Route
        except ImportError as exc:
            raise InvalidRequest(
                f"the semantic-router library is not installed ({exc}); install the optional "
                "extra: pip install 'ymera[compare-router]'") from exc
        self.embedder = _shared_embedder(embedder)
        self.policy = policy
        self.prepare = prepare or _prepare_for(agent_types)
        routes = [Route(name=name, utterances=declared_texts(spec))
                  for name, spec in agent_types.items()]
        self.library_router = IndexedRouter(_library_encoder(self.embedder, self.prepare), routes,
                                            top_k=top_k, aggregation="mean")

    def decide_many(self, descriptions: Sequence[str],
                    policy: RoutingPolicy | None = None) -> list[Decision]:
        policy = policy or self.policy
        decisions = []
        for description in descriptions:
            choices = self.library_router(description, limit=None, threshold=-math.inf)
            scores = {c.name: float(c.confidence) for c in choices
                      if c.name is not None and c.confidence is not None}
            decisions.append(scored_decision(scores, policy, "semantic-router"))
        return decisions


def _library_encoder(embedder: Embedder, prepare: Callable[[str], str]) -> Any:
    """A `semantic_router` dense encoder that prepares and embeds texts as the router does."""
    from pydantic import PrivateAttr
    from semantic_router.encoders import DenseEncoder

    class PreparedEmbedder(DenseEncoder):
        name: str = "sentence-transformers/all-MiniLM-L6-v2"
        type: str = "ymera"
        _embed: Any = PrivateAttr()

        def __call__(self, docs: list[Any]) -> list[list[float]]:
            return self._embed(docs)

    encoder = PreparedEmbedder()
    encoder._embed = lambda docs: embedder.encode([prepare(str(d)) for d in docs]).tolist()
    return encoder
