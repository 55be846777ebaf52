"""Which agent type should take a task, given the nearest labelled examples: a pure function.

`decide(neighbours, stats, load, policy)` turns one query's nearest examples into a `Decision`:

1. Evidence. Each of the `policy.k` nearest examples votes for its agent type with weight
   exp((similarity - best similarity) / temperature); a type's evidence is its share of the votes.
2. Adjustment. Each type's evidence is multiplied by a factor from its observed reliability
   (success rate, shrunk towards 1 while there are few samples), latency (against the median of
   the candidates) and current load. The factor lies in [exp(-max_adjustment), exp(max_adjustment)],
   so two types swap places only when their evidence is within exp(2 * max_adjustment) of each
   other (22% with the default 0.1): operational signals break close calls, never overturn
   strong evidence. Scores are then renormalised to sum to 1.
3. Confidence. The chosen type is the top score; `confidence` is that score, and `similarity` is
   how close the chosen type's nearest examples are (the mean of its `support` best similarities
   among the neighbours). Below `min_similarity` or `min_confidence` the decision is not routed:
   the task looks unlike anything any agent declared ("no confident route").
4. Out of scope. Examples of the sentinel type `ml.out_of_scope.OUT_OF_SCOPE` (phrasings of
   tasks no agent does) vote in step 1 like any other, but are never a candidate: when their
   share of the vote exceeds every agent type's, the decision is not routed, whatever the
   thresholds. `candidates` and `confidence` are over the agent types alone; `out_of_scope` is
   the sentinel's share. Closer examples weigh exponentially more, so an agent type's examples
   that are nearer to the task than the out-of-scope ones outvote them.

`RoutingPolicy`'s thresholds default to values fitted on tests/data/routing_dev.jsonl with
`ml.evaluation.calibrate` for the built-in agents; refit them when the agent types change much.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any

from ml.example_index import Neighbour
from ml.out_of_scope import OUT_OF_SCOPE
from storage.messages import RouteDecision, RouteMethod


@dataclasses.dataclass(frozen=True)
class RoutingPolicy:
    """How evidence becomes a decision. The two thresholds decide "no confident route".

    `out_of_scope_examples`, `lexical_weight` and `cue_weight` are read by the router, not by
    `decide`: whether the out-of-scope phrases of `ml.out_of_scope` count, how much word overlap
    (`ml.lexical`) adds to each example's cosine similarity (0 for none), and how much a
    phrasing cue (`ml.cues`: a stored document or a given text; prose, listed labels or code)
    adds to or takes from the similarity of the examples of the types it points to (0 for
    none)."""

    k: int = 15
    temperature: float = 0.1
    support: int = 3
    min_similarity: float = 0.315
    min_confidence: float = 0.0
    max_adjustment: float = 0.1
    reliability_weight: float = 0.5
    latency_weight: float = 0.25
    load_weight: float = 0.25
    prior_samples: int = 10
    explain: int = 3
    duplicate_similarity: float = 0.95
    out_of_scope_examples: bool = True
    lexical_weight: float = 0.2
    cue_weight: float = 0.15

    def __post_init__(self) -> None:
        if self.k < 1 or self.support < 1 or self.explain < 0 or self.prior_samples < 0:
            raise ValueError("k and support must be >= 1; explain and prior_samples >= 0")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if not 0 <= self.max_adjustment <= 1:
            raise ValueError("max_adjustment must be within [0, 1]")
        if min(self.reliability_weight, self.latency_weight, self.load_weight) < 0:
            raise ValueError("adjustment weights must be >= 0")
        if self.lexical_weight < 0 or self.cue_weight < 0:
            raise ValueError("lexical_weight and cue_weight must be >= 0")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TypeStats:
    """What the platform has observed of one agent type's recent attempts."""

    success_rate: float | None = None
    mean_latency_s: float | None = None
    samples: int = 0


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of `decide`: the best agent type, how sure, why, and whether to route.

    `agent_type` is the top candidate even when `routed` is false (None without any evidence);
    `candidates` are (type, score) pairs, best first, scores summing to 1; `explanation` holds
    the nearest examples of the chosen type, the ones that drove the choice (the nearest
    out-of-scope examples when they outvoted every type); `out_of_scope` is the out-of-scope
    examples' share of the vote."""

    agent_type: str | None
    confidence: float
    similarity: float
    candidates: tuple[tuple[str, float], ...]
    explanation: tuple[Neighbour, ...]
    routed: bool
    reason: str
    out_of_scope: float = 0.0

    def to_route_decision(self) -> RouteDecision:
        return RouteDecision(agent_type=self.agent_type or "", confidence=self.confidence,
                             candidates=self.candidates, reason=self.reason,
                             method=RouteMethod.SEMANTIC, similarity=self.similarity,
                             nearest=self.explanation, routed=self.routed)

    def to_json(self) -> dict[str, Any]:
        return {"agent_type": self.agent_type, "confidence": self.confidence,
                "similarity": self.similarity, "candidates": [list(c) for c in self.candidates],
                "explanation": [n.to_json() for n in self.explanation], "routed": self.routed,
                "reason": self.reason, "out_of_scope": self.out_of_scope}


def evidence(neighbours: Sequence[Neighbour], policy: RoutingPolicy) -> dict[str, float]:
    """Each agent type's share of the similarity-weighted vote of the `k` nearest examples."""
    nearest = sorted(neighbours, key=lambda n: n.similarity, reverse=True)[:policy.k]
    if not nearest:
        return {}
    best = nearest[0].similarity
    votes: dict[str, float] = {}
    for neighbour in nearest:
        weight = math.exp((neighbour.similarity - best) / policy.temperature)
        votes[neighbour.agent_type] = votes.get(neighbour.agent_type, 0.0) + weight
    total = sum(votes.values())
    return {agent_type: vote / total for agent_type, vote in votes.items()}


def adjustment(agent_type: str, stats: Mapping[str, TypeStats], load: Mapping[str, float],
               median_latency: float | None, policy: RoutingPolicy) -> float:
    """The multiplicative factor of `agent_type`, within exp(±max_adjustment)."""
    weights = policy.reliability_weight + policy.latency_weight + policy.load_weight
    if weights == 0 or policy.max_adjustment == 0:
        return 1.0
    observed = stats.get(agent_type)
    reliability = latency = 0.0
    if observed is not None and observed.success_rate is not None:
        samples = max(observed.samples, 0)
        rate = min(max(observed.success_rate, 0.0), 1.0)
        shrunk = (rate * samples + policy.prior_samples) / (samples + policy.prior_samples) \
            if samples + policy.prior_samples else rate
        reliability = shrunk - 1.0  # in [-1, 0]
    if observed is not None and observed.mean_latency_s is not None and median_latency:
        own = max(observed.mean_latency_s, 0.0)
        latency = -(own - median_latency) / (own + median_latency)  # in (-1, 1)
    busy = -min(max(load.get(agent_type, 0.0), 0.0), 1.0)  # in [-1, 0]
    signal = (policy.reliability_weight * reliability + policy.latency_weight * latency
              + policy.load_weight * busy) / weights
    return math.exp(policy.max_adjustment * signal)


def support_similarity(neighbours: Sequence[Neighbour], agent_type: str,
                       policy: RoutingPolicy) -> float:
    """Mean of `agent_type`'s `support` best similarities among the `k` nearest examples; a
    missing one counts as the k-th similarity (the most an unseen example can have)."""
    nearest = sorted(neighbours, key=lambda n: n.similarity, reverse=True)[:policy.k]
    own = [n.similarity for n in nearest if n.agent_type == agent_type][:policy.support]
    if not own:
        return 0.0
    floor = nearest[-1].similarity
    own += [floor] * (policy.support - len(own))
    return sum(own) / len(own)


def decide(neighbours: Sequence[Neighbour], stats: Mapping[str, TypeStats] | None = None,
           load: Mapping[str, float] | None = None,
           policy: RoutingPolicy = RoutingPolicy()) -> Decision:
    """The decision for one query whose nearest examples are `neighbours` (any order).

    `stats` and `load` (fraction of a type's capacity in use, 0 to 1) are optional, per type."""
    if not policy.out_of_scope_examples:
        neighbours = [n for n in neighbours if n.agent_type != OUT_OF_SCOPE]
    shares = evidence(neighbours, policy)
    against = shares.pop(OUT_OF_SCOPE, 0.0)
    unlike = tuple(sorted((n for n in neighbours if n.agent_type == OUT_OF_SCOPE),
                          key=lambda n: n.similarity, reverse=True)[:policy.explain])
    if not shares:
        reason = ("no confident route: it looks like tasks no agent does, like "
                  + _examples(unlike) if unlike else "no confident route: no examples to compare")
        return Decision(None, 0.0, 0.0, (), unlike, False, reason, against)
    stats = stats or {}
    load = load or {}
    observed = (stats[t].mean_latency_s for t in shares if t in stats)
    latencies = [latency for latency in observed if latency is not None]
    median_latency = median(latencies) if latencies else None
    scores = {t: share * adjustment(t, stats, load, median_latency, policy)
              for t, share in shares.items()}
    total = sum(scores.values())
    candidates = tuple(sorted(((t, s / total) for t, s in scores.items()),
                              key=lambda c: (-c[1], c[0])))
    chosen, confidence = candidates[0]
    similarity = support_similarity(neighbours, chosen, policy)
    explanation = tuple(sorted((n for n in neighbours if n.agent_type == chosen),
                               key=lambda n: n.similarity, reverse=True)[:policy.explain])
    if against > max(shares.values()):
        reason = (f"no confident route: it looks more like tasks no agent does (share "
                  f"{against:.2f}, {chosen} {shares[chosen]:.2f}), like {_examples(unlike)}")
        return Decision(chosen, confidence, similarity, candidates, unlike, False, reason,
                        against)
    if similarity < policy.min_similarity:
        reason = (f"no confident route: the nearest {chosen} examples have similarity "
                  f"{similarity:.3f}, below {policy.min_similarity:.3f}")
        return Decision(chosen, confidence, similarity, candidates, explanation, False, reason,
                        against)
    if confidence < policy.min_confidence:
        reason = (f"no confident route: {chosen} has confidence {confidence:.3f}, below "
                  f"{policy.min_confidence:.3f}")
        return Decision(chosen, confidence, similarity, candidates, explanation, False, reason,
                        against)
    return Decision(chosen, confidence, similarity, candidates, explanation, True,
                    "semantic: like " + _examples(explanation), against)


def _examples(neighbours: Sequence[Neighbour]) -> str:
    return "; ".join(f"{n.text!r} ({n.similarity:.2f})" for n in neighbours)
