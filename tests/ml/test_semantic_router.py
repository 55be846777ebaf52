"""The semantic router: its example index, the pure decision rule, routing with the real bundled
model, the evaluation report, and routing quality on held-out descriptions.

The model loads once for the module, and every router here shares its embedder (whose cache makes
each further router cheap to build).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from actors.agents import BUILTIN_AGENTS, BUILTIN_SPECS, Monitoring
from ml.baseline import NearestCentroidRouter
from ml.decision import Decision, RoutingPolicy, TypeStats, adjustment, decide
from ml.embeddings import Embedder
from ml.errors import NoConfidentRoute
from ml.evaluation import LabelledLine, calibrate, evaluate, load_lines
from ml.example_index import ExampleIndex, Neighbour
from ml.out_of_scope import OUT_OF_SCOPE
from ml.semantic_router import AgentNameMask, SemanticRouter, instruction_text
from storage.errors import InvalidRequest
from storage.messages import RouteDecision

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


@pytest.fixture
def fresh_router(shared: Embedder, router: SemanticRouter) -> SemanticRouter:
    """A router of its own, for tests that change what it knows."""
    return SemanticRouter(BUILTIN_SPECS, shared)


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def n(agent_type: str, similarity: float, text: str | None = None) -> Neighbour:
    return Neighbour(text or f"{agent_type} {similarity}", agent_type, similarity)


# --- the example index ---------------------------------------------------------------------------


def test_index_searches_by_cosine_similarity_and_reports_each_example():
    index = ExampleIndex(dimension=3)
    index.add(["east", "north-east"], "a", vectors=np.stack([unit(1, 0, 0), unit(1, 1, 0)]))
    index.add(["north"], "b", "learned", vectors=unit(0, 1, 0)[None, :])

    (row,) = index.search(unit(1, 0.1, 0)[None, :], k=5)

    assert len(index) == 3 and index.types == {"a", "b"}
    assert [(x.text, x.agent_type, x.source) for x in row] == [
        ("east", "a", "declared"), ("north-east", "a", "declared"), ("north", "b", "learned")]
    assert row[0].similarity == pytest.approx(float(unit(1, 0.1, 0) @ unit(1, 0, 0)), abs=1e-6)
    assert [x.similarity for x in row] == sorted((x.similarity for x in row), reverse=True)


def test_index_removes_a_type_and_keeps_serving_the_rest():
    index = ExampleIndex(dimension=2)
    index.add(["a1", "a2"], "a", vectors=np.stack([unit(1, 0), unit(1, 0.2)]))
    index.add(["b1"], "b", vectors=unit(0, 1)[None, :])

    assert index.remove_type("a") == 2
    assert index.remove_type("a") == 0
    assert len(index) == 1 and index.types == {"b"}
    assert [x.text for x in index.search(unit(1, 0)[None, :], k=3)[0]] == ["b1"]
    index.add(["a3"], "a", vectors=unit(1, 0)[None, :])
    assert [x.text for x in index.search(unit(1, 0)[None, :], k=1)[0]] == ["a3"]


def test_index_removes_only_the_named_sources_and_finds_the_nearest_of_a_type():
    index = ExampleIndex(dimension=2)
    index.add(["declared"], "a", "declared", vectors=unit(1, 0)[None, :])
    index.add(["learned"], "a", "learned", vectors=unit(1, 1)[None, :])

    assert index.remove_type("a", sources=("declared",)) == 1
    assert [e.text for e in index.examples("a")] == ["learned"]
    nearest = index.nearest_of_type(unit(1, 0.9), "a")
    assert nearest is not None and nearest.text == "learned" and nearest.similarity > 0.99
    assert index.nearest_of_type(unit(1, 0), "b") is None


def test_index_search_of_an_empty_index_finds_nothing_and_bad_input_is_refused():
    index = ExampleIndex(dimension=2)
    assert index.search(np.stack([unit(1, 0), unit(0, 1)]), k=4) == [[], []]
    with pytest.raises(InvalidRequest, match="source"):
        index.add(["x"], "a", "rumour", vectors=unit(1, 0)[None, :])
    with pytest.raises(ValueError, match="shape"):
        index.add(["x", "y"], "a", vectors=unit(1, 0)[None, :])
    with pytest.raises(TypeError):
        index.add("x", "a", vectors=unit(1, 0)[None, :])


def test_index_from_agent_types_holds_every_declared_capability_and_example(shared: Embedder):
    index = ExampleIndex.from_agent_types(BUILTIN_SPECS, shared)
    expected = sum(len(a.spec.capabilities) + len(a.spec.examples) for a in BUILTIN_AGENTS.values())
    assert len(index) == expected and index.types == set(BUILTIN_AGENTS)
    assert {e.source for e in index.examples()} == {"declared"}
    (row,) = index.search(shared.encode(["What's the square root of 144?"]), k=1)
    assert row[0].agent_type == "calculator" and row[0].similarity == pytest.approx(1.0, abs=1e-5)


# --- the decision rule ---------------------------------------------------------------------------

POLICY = RoutingPolicy(min_similarity=0.3, min_confidence=0.5)


def test_decide_ranks_types_by_weighted_votes_with_scores_summing_to_one():
    neighbours = [n("b", 0.55), n("a", 0.8, "best a"), n("a", 0.75, "second a"), n("c", 0.5)]
    decision = decide(neighbours, policy=POLICY)

    assert decision.routed and decision.agent_type == "a"
    assert [t for t, _ in decision.candidates] == ["a", "b", "c"]
    assert sum(s for _, s in decision.candidates) == pytest.approx(1.0)
    assert decision.confidence == decision.candidates[0][1] > 0.8
    assert [x.text for x in decision.explanation] == ["best a", "second a"]
    assert decision.reason.startswith("semantic: like 'best a' (0.80)")
    route = decision.to_route_decision()
    assert isinstance(route, RouteDecision) and route.agent_type == "a"
    assert route.candidates == decision.candidates


def test_decide_counts_only_the_k_nearest():
    neighbours = [n("a", 0.9)] + [n("b", 0.89)] * 2 + [n("a", 0.1)] * 20
    assert decide(neighbours, policy=dataclasses.replace(POLICY, k=3)).agent_type == "b"


def test_decide_similarity_is_the_mean_of_the_chosen_types_best_matches():
    neighbours = [n("a", 0.6), n("a", 0.5), n("b", 0.2)]
    decision = decide(neighbours, policy=dataclasses.replace(POLICY, support=3))
    # the missing third match counts as the k-th similarity (0.2)
    assert decision.similarity == pytest.approx((0.6 + 0.5 + 0.2) / 3)


def test_weak_similarity_or_confidence_is_no_confident_route():
    far = decide([n("a", 0.25), n("a", 0.24)], policy=POLICY)
    assert not far.routed and far.agent_type == "a"
    assert "similarity 0.243, below 0.300" in far.reason

    split = decide([n("a", 0.7), n("b", 0.7), n("c", 0.7)], policy=POLICY)
    assert not split.routed and "confidence 0.333, below 0.500" in split.reason

    empty = decide([], policy=POLICY)
    assert not empty.routed and empty.agent_type is None and empty.candidates == ()


def test_operational_signals_reorder_close_calls():
    neighbours = [n("a", 0.70), n("b", 0.695)]
    assert decide(neighbours, policy=POLICY).agent_type == "a"
    flaky = {"a": TypeStats(success_rate=0.2, mean_latency_s=9.0, samples=200),
             "b": TypeStats(success_rate=1.0, mean_latency_s=1.0, samples=200)}
    assert decide(neighbours, flaky, {"a": 1.0}, POLICY).agent_type == "b"


def test_operational_signals_never_overturn_strong_evidence():
    neighbours = [n("a", 0.80), n("a", 0.78), n("b", 0.72)]
    hopeless = {"a": TypeStats(success_rate=0.0, mean_latency_s=600.0, samples=10_000),
                "b": TypeStats(success_rate=1.0, mean_latency_s=0.01, samples=10_000)}
    plain = decide(neighbours, policy=POLICY)
    adjusted = decide(neighbours, hopeless, {"a": 1.0, "b": 0.0}, POLICY)
    assert plain.agent_type == adjusted.agent_type == "a"
    assert adjusted.confidence < plain.confidence


@pytest.mark.parametrize("stats, load", [
    (TypeStats(0.0, 1e6, 10**9), 5.0),
    (TypeStats(1.0, 0.0, 10**9), -3.0),
    (TypeStats(None, None, 0), 0.0),
])
def test_each_adjustment_stays_within_its_bound(stats: TypeStats, load: float):
    factor = adjustment("a", {"a": stats}, {"a": load}, 1.0, POLICY)
    bound = math.exp(POLICY.max_adjustment)
    assert 1 / bound - 1e-12 <= factor <= bound + 1e-12


def test_a_new_type_with_few_failures_is_barely_penalised():
    few = adjustment("a", {"a": TypeStats(success_rate=0.0, samples=1)}, {}, None, POLICY)
    many = adjustment("a", {"a": TypeStats(success_rate=0.0, samples=1000)}, {}, None, POLICY)
    assert many < few < 1.0


# --- what is embedded ----------------------------------------------------------------------------


def test_the_instruction_is_routed_not_the_pasted_data():
    assert instruction_text('sort these by price: [{"name": "pen", "price": 1.2}]') == \
        "sort these by price: JSON"
    assert instruction_text("which customer spent the most? name,spend\nAna,120\nBo,340") == \
        "which customer spent the most? name,spend"
    assert instruction_text('summarise: "The board met on Tuesday to review the budget."') == \
        'summarise: "text"'
    assert instruction_text("do the phone numbers match \\d{10}?") == \
        "do the phone numbers match \\d{10}?"
    assert instruction_text('how similar is "reset my password" to "I forgot my login"?') == \
        'how similar is "text" to "text"?'
    assert instruction_text('is the "unit price" column a number?') == \
        'is the "unit price" column a number?'
    assert instruction_text("what's the tone of this: 'I can't believe you did that again'") == \
        'what\'s the tone of this: "text"'
    assert instruction_text("translate 'hi' into the players' language") == \
        "translate 'hi' into the players' language"
    assert instruction_text("shorten this note: The office is closed on Friday for the move.") \
        == 'shorten this note: "text"'
    # a list of fields after the colon is part of the instruction, not a text
    assert instruction_text("profile this dataset: missing values, unique counts, min and max") \
        == "profile this dataset: missing values, unique counts, min and max"


def test_agent_names_used_as_names_are_masked():
    mask = AgentNameMask(BUILTIN_SPECS)
    assert mask("tell the learning agent that data arrived") == \
        "tell the other agent that data arrived"
    assert mask("is the calculator pool healthy") == "is the agent pool healthy"
    assert mask("leave it in data_processor's inbox") == "leave it in the other agent's inbox"
    assert mask("queue length for text_analysis") == "queue length for the agent"
    assert mask("validate this record with machine learning") == \
        "validate this record with machine learning"


# --- the router, with the real model -------------------------------------------------------------


@pytest.mark.parametrize("description, agent_type", [
    ("what is 12 times 7", "calculator"),
    ("square root of 1764", "calculator"),
    ("average of 3, 9 and 12", "calculator"),
    ("sort these orders by date", "data_processor"),
    ("sum the sales per region in this table", "data_processor"),
    ("join the orders table with the customers table on customer_id", "data_processor"),
    ("summarise this article in two sentences", "text_analysis"),
    ("is the sentiment of this tweet positive or negative?", "text_analysis"),
    ("extract the keywords from this blog post", "text_analysis"),
    ("validate this JSON document against the schema", "validation"),
    ("check that no row has an empty email column", "validation"),
    ("check that every price is a positive number", "validation"),
    ("train a classifier to predict churn from this customer table", "learning"),
    ("cluster these customers into 3 segments with k-means", "learning"),
    ("fit a regression model that predicts house prices", "learning"),
    ("how many tasks failed in the last hour", "monitoring"),
    ("what is the p95 latency of each agent type?", "monitoring"),
    ("how long is the task queue right now?", "monitoring"),
    ("send a message to the learning agent that new data arrived", "communication"),
    ("post the results to our webhook at https://hooks.example.com/x", "communication"),
    ("notify the ops webhook that the nightly job failed", "communication"),
])
async def test_clear_tasks_go_to_the_right_agent(router: SemanticRouter, description: str,
                                                 agent_type: str):
    route = await router.decide(description, {}, None)
    assert route.agent_type == agent_type
    assert route.reason.startswith("semantic: like ")
    assert route.candidates[0] == (agent_type, route.confidence)


async def test_a_task_no_agent_does_is_not_routed(router: SemanticRouter):
    with pytest.raises(NoConfidentRoute) as caught:
        await router.decide("book me a flight to Paris", {}, None)
    details = caught.value.details
    assert "name an agent_type" in caught.value.message
    assert "no agent does" in caught.value.message and details["out_of_scope"] > 0.5
    assert len(details["candidates"]) <= 3
    assert details["min_similarity"] == router.policy.min_similarity
    assert details["nearest"] and all(n["agent_type"] == OUT_OF_SCOPE for n in details["nearest"])


async def test_a_requested_known_type_is_honoured(router: SemanticRouter):
    route = await router.decide("what is 12 times 7", {}, "learning")
    assert route == RouteDecision("learning", 1.0, (("learning", 1.0),), "requested")


async def test_an_unknown_requested_type_is_an_invalid_request(router: SemanticRouter):
    with pytest.raises(InvalidRequest, match=r"unknown agent_type 'translator'; known types: "
                                             r"calculator, communication, data_processor"):
        await router.decide("translate this", {}, "translator")


def test_decide_many_encodes_the_batch_in_one_call(shared: Embedder, router: SemanticRouter):
    calls: list[int] = []

    class Counting:
        dimension = shared.dimension

        def encode(self, texts: Sequence[str]) -> np.ndarray:
            calls.append(len(texts))
            return shared.encode(texts)

    counted = SemanticRouter(BUILTIN_SPECS, Counting())  # type: ignore[arg-type]
    calls.clear()
    decisions = counted.decide_many(["what is 12 times 7", "sort these orders by date", "hello"])
    assert calls == [3]
    assert [d.agent_type if d.routed else None for d in decisions] == \
        ["calculator", "data_processor", None]
    assert counted.decide_many([]) == []


def test_strong_evidence_survives_a_struggling_pool(fresh_router: SemanticRouter):
    fresh_router.update_signals(
        stats={"calculator": TypeStats(success_rate=0.0, mean_latency_s=60.0, samples=500)},
        load={"calculator": 1.0})
    (decision,) = fresh_router.decide_many(["what is 12 times 7"])
    assert decision.routed and decision.agent_type == "calculator"


def test_add_example_learns_and_skips_near_duplicates(fresh_router: SemanticRouter):
    size = len(fresh_router.index)
    assert fresh_router.add_example("What is 12 times 7?", "calculator") is False
    text = "how far does light travel in 8 minutes at 299792 km per second"
    assert fresh_router.add_example(text, "calculator", "feedback") is True
    assert fresh_router.add_example(text.upper(), "calculator") is False
    assert len(fresh_router.index) == size + 1
    assert fresh_router.index.examples("calculator")[-1].source == "feedback"
    with pytest.raises(InvalidRequest, match="unknown agent_type"):
        fresh_router.add_example("translate this", "translator")


async def test_types_come_and_go_without_a_restart(fresh_router: SemanticRouter):
    question = "how many tasks failed in the last hour"
    declared = len(Monitoring.spec.capabilities) + len(Monitoring.spec.examples)
    fresh_router.add_example("are the replicas keeping up with the backlog", "monitoring")

    assert fresh_router.remove_type("monitoring") == declared + 1
    assert "monitoring" not in fresh_router.agent_types
    (gone,) = fresh_router.decide_many([question])
    assert gone.agent_type != "monitoring"
    with pytest.raises(InvalidRequest):
        await fresh_router.decide(question, {}, "monitoring")

    assert fresh_router.add_type(Monitoring.spec) == declared
    assert (await fresh_router.decide(question, {}, None)).agent_type == "monitoring"


# --- evaluation ----------------------------------------------------------------------------------


class Scripted:
    """A router whose decisions are given: (top type, routed, confidence, similarity) per text."""

    def __init__(self, script: dict[str, tuple[str, float, float]]) -> None:
        self.script = script
        self.policy = RoutingPolicy(min_similarity=0.3, min_confidence=0.0)

    def decide_many(self, descriptions: Sequence[str],
                    policy: RoutingPolicy | None = None) -> list[Decision]:
        policy = policy or self.policy
        decisions = []
        for text in descriptions:
            agent_type, confidence, similarity = self.script[text]
            routed = similarity >= policy.min_similarity and confidence >= policy.min_confidence
            decisions.append(Decision(agent_type, confidence, similarity,
                                      ((agent_type, confidence),), (), routed, "scripted"))
        return decisions


SCRIPT = {"1": ("a", 0.9, 0.8), "2": ("a", 0.9, 0.7), "3": ("b", 0.9, 0.6),
          "4": ("a", 0.9, 0.2), "5": ("b", 0.9, 0.1), "6": ("a", 0.9, 0.5)}
LINES = [LabelledLine("1", "a"), LabelledLine("2", "a"), LabelledLine("3", "a"),
         LabelledLine("4", "b"), LabelledLine("5", None), LabelledLine("6", None)]


def test_evaluate_reports_accuracy_f1_rejections_and_confusion():
    report = evaluate(Scripted(SCRIPT), LINES)

    assert (report.lines, report.in_scope, report.out_of_scope) == (6, 4, 2)
    assert report.accuracy == pytest.approx(2 / 4)  # "3" went to b, "4" was rejected
    assert report.ranking_accuracy == pytest.approx(2 / 4)
    assert report.oos_recall == pytest.approx(1 / 2)  # "6" was routed
    assert report.oos_precision == pytest.approx(1 / 2)  # "4" was rejected but in scope
    assert report.labels == ("a", "b", "none")
    assert report.confusion == {"a": {"a": 2, "b": 1, "none": 0},
                                "b": {"a": 0, "b": 0, "none": 1},
                                "none": {"a": 1, "b": 0, "none": 1}}
    # F1: a = 2*(2/3)*(2/3)/(4/3) = 2/3, b = 0, none = 1/2
    assert report.macro_f1 == pytest.approx((2 / 3 + 0 + 1 / 2) / 3)
    assert [(e.description, e.predicted) for e in report.errors] == \
        [("3", "b"), ("4", None), ("6", "a")]
    json.dumps(report.to_json())
    text = report.to_text()
    assert "confusion (rows expected, columns predicted)" in text and "macro-F1" in text


def test_calibrate_finds_the_thresholds_that_decide_most_lines_right():
    policy = calibrate(Scripted(SCRIPT), LINES)
    # any min_similarity in (0.5, 0.7] rejects "5" and "6" and keeps "1" and "2" ("3" is wrong
    # either way); the middle of those grid values is chosen, and no confidence bar is needed
    assert policy.min_similarity == pytest.approx(0.6) and policy.min_confidence == 0.0
    assert evaluate(Scripted(SCRIPT), LINES, policy).oos_recall == 1.0


def test_a_line_of_an_optional_type_is_out_of_scope_for_a_router_without_it():
    # "6" is `a` work where `a` is registered (like `llm` with a model), out of scope elsewhere
    optional = [*LINES[:5], LabelledLine("6", "a", optional=True)]
    without_a = Scripted(SCRIPT)
    without_a.agent_types = ("b",)  # type: ignore[attr-defined]
    report = evaluate(without_a, optional)
    assert (report.in_scope, report.out_of_scope) == (4, 2)
    assert [(e.description, e.expected) for e in report.errors if e.description == "6"] == \
        [("6", None)]
    with_a = Scripted(SCRIPT)
    with_a.agent_types = ("a", "b")  # type: ignore[attr-defined]
    report = evaluate(with_a, optional)
    assert (report.in_scope, report.out_of_scope) == (5, 1)
    assert "6" not in [e.description for e in report.errors]  # routed to `a`: right
    assert load_lines_from_text('{"description": "x", "expected": "a", "optional": true}') == \
        [LabelledLine("x", "a", optional=True)]


def load_lines_from_text(text: str) -> list[LabelledLine]:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as file:
        file.write(text + "\n")
    return load_lines(file.name)


def test_importing_the_router_loads_no_heavy_library():
    code = ("import sys, ml.semantic_router, ml.evaluation, ml.decision, ml.example_index, "
            "ml.baseline, ml.lexical, ml.out_of_scope; "
            "heavy = {'torch', 'sentence_transformers', 'transformers', 'faiss'} "
            "& set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# --- quality -------------------------------------------------------------------------------------


@pytest.mark.parametrize("holdout", ["routing_holdout.jsonl", "routing_holdout2.jsonl"])
def test_quality_on_held_out_descriptions(router: SemanticRouter, holdout: str):
    """Thresholds fitted on the dev set; accuracy and out-of-scope precision and recall measured
    on holdout sets, which nothing here was tuned on, against the nearest-centroid baseline on
    the same encoder, fitted the same way."""
    dev, held_out = load_lines(DATA / "routing_dev.jsonl"), load_lines(DATA / holdout)
    policy = calibrate(router, dev)
    report = evaluate(router, held_out, policy)
    baseline = NearestCentroidRouter(BUILTIN_SPECS, router.embedder,
                                     prepare=router.routing_text)
    compared = evaluate(baseline, held_out, calibrate(baseline, dev))

    assert report.accuracy >= 0.93, report.to_text()
    assert report.oos_recall >= 0.85 and report.oos_precision >= 0.90, report.to_text()
    assert report.macro_f1 >= 0.90, report.to_text()
    assert report.accuracy > compared.accuracy and report.macro_f1 > compared.macro_f1, \
        compared.to_text()
    default = RoutingPolicy()
    assert abs(policy.min_similarity - default.min_similarity) <= 0.03 and \
        abs(policy.min_confidence - default.min_confidence) <= 0.05, (
            f"the default thresholds drifted from the fit on the dev set ({policy}); refit them")
