"""The baselines: a nearest-centroid router on the same encoder and texts as the semantic router,
and the optional `semantic-router` library behind the same evaluation protocol."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np
import pytest

from actors.agents import BUILTIN_SPECS
from ml.baseline import NearestCentroidRouter, SemanticRouterLibrary, scored_decision
from ml.decision import RoutingPolicy
from ml.embeddings import Embedder
from ml.evaluation import LabelledLine, calibrate, evaluate
from ml.semantic_router import SemanticRouter
from storage.errors import InvalidRequest
from storage.messages import AgentSpec

POLICY = RoutingPolicy(min_similarity=0.5, min_confidence=0.0)


class TableEmbedder:
    """Looks each text up in a table of vectors (unit rows)."""

    dimension = 2

    def __init__(self, table: dict[str, tuple[float, float]]) -> None:
        self.table = {text: np.asarray(v, dtype=np.float32) / np.linalg.norm(v)
                      for text, v in table.items()}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.table[text] for text in texts])


def agent(capabilities: tuple[str, ...], examples: tuple[str, ...]) -> AgentSpec:
    return AgentSpec("toy", "a toy agent type", capabilities, examples)


def toy_router() -> NearestCentroidRouter:
    table = {"east": (1, 0), "east-north-east": (1, 0.5), "north": (0, 1),
             "north-by-west": (-0.2, 1), "a query near east": (1, 0.1),
             "a query in between": (1, 1.1), "south": (0, -1)}
    agent_types = {"a": agent(("east",), ("east-north-east",)),
                   "b": agent(("north",), ("north-by-west",))}
    return NearestCentroidRouter(agent_types, TableEmbedder(table),  # type: ignore[arg-type]
                                 POLICY, prepare=lambda text: text)


def test_a_type_is_the_normalised_mean_of_its_declared_texts():
    router = toy_router()
    east, east_north_east = np.array([1.0, 0.0]), np.array([1.0, 0.5]) / np.sqrt(1.25)
    mean = (east + east_north_east) / 2
    assert router.centroids[0] == pytest.approx(mean / np.linalg.norm(mean), abs=1e-6)
    assert np.linalg.norm(router.centroids, axis=1) == pytest.approx([1.0, 1.0], abs=1e-6)


def test_the_nearest_centroid_takes_the_task_unless_it_is_too_far():
    near, between, far = toy_router().decide_many(
        ["a query near east", "a query in between", "south"])

    assert near.routed and near.agent_type == "a" and near.reason.startswith("centroid:")
    assert near.candidates[0] == ("a", near.confidence) and near.confidence > 0.5
    assert sum(s for _, s in near.candidates) == pytest.approx(1.0)
    assert between.routed and between.confidence < near.confidence
    assert not far.routed and "below 0.500" in far.reason and far.similarity < 0.5


def test_a_confidence_bar_rejects_a_close_call():
    decision = scored_decision({"a": 0.70, "b": 0.69}, RoutingPolicy(min_confidence=0.6), "x")
    assert not decision.routed and decision.agent_type == "a"
    assert "confidence" in decision.reason
    empty = scored_decision({}, POLICY, "x")
    assert not empty.routed and empty.agent_type is None


def test_evaluation_and_calibration_work_on_the_baseline():
    router = toy_router()
    lines = [LabelledLine("a query near east", "a"), LabelledLine("south", None)]
    policy = calibrate(router, lines)
    report = evaluate(router, lines, policy)
    assert report.accuracy == 1.0 and report.oos_recall == 1.0


# --- with the real model -------------------------------------------------------------------------


@pytest.mark.parametrize("description, agent_type", [
    ("what is 37 times 12 minus 5", "calculator"),
    ("join the orders table with the customers table on customer_id", "data_processor"),
    ("summarise this article in two sentences", "text_analysis"),
    ("validate this JSON document against the schema", "validation"),
    ("cluster these customers into 3 segments with k-means", "learning"),
    ("how many nodes are alive in the cluster?", "monitoring"),
    ("post the results to our webhook at https://hooks.example.com/x", "communication"),
])
def test_the_centroid_baseline_routes_clear_tasks(shared: Embedder, description: str,
                                                  agent_type: str):
    router = NearestCentroidRouter(BUILTIN_SPECS, shared)
    (decision,) = router.decide_many([description])
    assert decision.routed and decision.agent_type == agent_type


def test_the_baseline_prepares_texts_like_the_router(shared: Embedder):
    semantic = SemanticRouter(BUILTIN_SPECS, shared)
    baseline = NearestCentroidRouter(BUILTIN_SPECS, shared, prepare=semantic.routing_text)
    default = NearestCentroidRouter(BUILTIN_SPECS, shared)
    text = 'tell the learning agent: "the nightly export finished without errors"'
    assert baseline.prepare(text) == default.prepare(text) == semantic.routing_text(text)
    assert baseline.centroids == pytest.approx(default.centroids)


@pytest.mark.skipif(importlib.util.find_spec("semantic_router") is not None,
                    reason="the semantic-router library is installed")
def test_the_library_baseline_needs_its_optional_extra(shared: Embedder):
    with pytest.raises(InvalidRequest, match=r"pip install 'ymera\[compare-router\]'"):
        SemanticRouterLibrary(BUILTIN_SPECS, shared)


@pytest.mark.skipif(importlib.util.find_spec("semantic_router") is None,
                    reason="the optional semantic-router library is not installed")
def test_the_library_baseline_routes_clear_tasks(shared: Embedder):
    router = SemanticRouterLibrary(BUILTIN_SPECS, shared)
    decisions = router.decide_many(["what is 37 times 12 minus 5",
                                    "how many nodes are alive in the cluster?"])
    assert [d.agent_type for d in decisions] == ["calculator", "monitoring"]
    assert all(d.routed for d in decisions)
