"""Routing with the `knowledge` agent registered (it always is) and `llm` (when a model is
configured): thresholds fitted on the dev set, quality measured on the holdouts, which nothing
was tuned on. tests/data/routing_holdout_knowledge.jsonl was written before the first
evaluation; its first figures (in-scope top-1 0.875, out-of-scope rejection 1.000) are below
the issue's 0.97 goal for in scope. The examples were then improved on the dev set alone, and
tests/data/routing_holdout_knowledge2.jsonl written before its first evaluation: in-scope 0.887
(its `knowledge` lines 23 of 26), out-of-scope rejection 0.900, still short of the goal. The
bars here guard against regressions from those first figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.registry import agent_specs, load_agent_types
from ml.embeddings import Embedder
from ml.evaluation import calibrate, evaluate, load_lines
from ml.out_of_scope import OUT_OF_SCOPE, phrases
from ml.semantic_router import SemanticRouter

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def with_knowledge_and_llm(shared: Embedder) -> SemanticRouter:
    return SemanticRouter(agent_specs(load_agent_types(llm=True)), shared)


@pytest.fixture(scope="module")
def with_knowledge(shared: Embedder) -> SemanticRouter:
    return SemanticRouter(agent_specs(load_agent_types()), shared)


@pytest.mark.parametrize(("holdout", "in_scope", "rejected", "knowledge_right"), [
    ("routing_holdout_knowledge.jsonl", 0.85, 0.9, 0.9),
    ("routing_holdout_knowledge2.jsonl", 0.85, 0.85, 0.85),
])
def test_knowledge_and_llm_tasks_on_their_holdouts(
        with_knowledge_and_llm: SemanticRouter, holdout: str, in_scope: float, rejected: float,
        knowledge_right: float):
    router = with_knowledge_and_llm
    policy = calibrate(router, load_lines(DATA / "routing_dev.jsonl"))
    lines = load_lines(DATA / holdout)
    report = evaluate(router, lines, policy)
    assert report.accuracy >= in_scope and report.oos_recall >= rejected, report.to_text()
    knowledge = [line for line in lines if line.expected == "knowledge"]
    decided = router.decide_many([line.description for line in knowledge], policy)
    right = sum(d.routed and d.agent_type == "knowledge" for d in decided)
    assert right / len(knowledge) >= knowledge_right, report.to_text()


@pytest.mark.parametrize("holdout", ["routing_holdout.jsonl", "routing_holdout2.jsonl"])
def test_registering_knowledge_keeps_the_earlier_holdouts_quality(
        with_knowledge: SemanticRouter, holdout: str):
    policy = calibrate(with_knowledge, load_lines(DATA / "routing_dev.jsonl"))
    report = evaluate(with_knowledge, load_lines(DATA / holdout), policy)
    # the bars of the built-in types' own quality test (tests/ml/test_semantic_router.py)
    assert report.accuracy >= 0.93 and report.oos_recall >= 0.85, report.to_text()
    assert report.confusion["none"].get("knowledge", 0) <= 1, report.to_text()


def test_registering_knowledge_keeps_every_out_of_scope_phrase(with_knowledge: SemanticRouter):
    # a declared example close to one phrase would take its whole category out (IT support,
    # say), and requests like it would then reach an agent
    indexed = [e.text for e in with_knowledge.index.examples(OUT_OF_SCOPE)]
    assert indexed == [phrase for _, phrase in phrases()]
    (decision,) = with_knowledge.decide_many(["set up the VPN client on my home laptop"])
    assert not decision.routed, decision.reason
