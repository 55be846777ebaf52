"""Out-of-scope phrases as negative evidence: they outvote agent types only when nearer, are
never routed to, can be switched off, and give way to a third-party agent that claims them."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from actors.agent import Agent
from actors.agents import BUILTIN_AGENTS, BUILTIN_SPECS
from ml.decision import Decision, RoutingPolicy, decide
from ml.embeddings import Embedder
from ml.evaluation import LabelledLine, calibrate
from ml.example_index import Neighbour
from ml.out_of_scope import (CATEGORIES, CLAIMED_SIMILARITY, CURATED_FOR, OUT_OF_SCOPE, phrases,
                             unclaimed)
from ml.semantic_router import SemanticRouter
from storage.messages import AGENT_TYPE_NAME, AgentSpec, AgentTask

POLICY = RoutingPolicy(k=10, min_similarity=0.3, min_confidence=0.0)
PHRASES = [phrase for _, phrase in phrases()]


def n(agent_type: str, similarity: float, text: str | None = None) -> Neighbour:
    return Neighbour(text or f"{agent_type} {similarity}", agent_type, similarity)


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


# --- the decision rule ---------------------------------------------------------------------------


def test_out_of_scope_examples_that_outvote_every_type_reject_the_task():
    neighbours = [n(OUT_OF_SCOPE, 0.62, "book a flight"), n("a", 0.6), n(OUT_OF_SCOPE, 0.58),
                  n("b", 0.4)]
    decision = decide(neighbours, policy=POLICY)

    assert not decision.routed and decision.agent_type == "a"
    assert "no agent does" in decision.reason and "'book a flight' (0.62)" in decision.reason
    assert [t for t, _ in decision.candidates] == ["a", "b"]
    assert sum(s for _, s in decision.candidates) == pytest.approx(1.0)
    assert decision.out_of_scope > 0.5
    assert {x.agent_type for x in decision.explanation} == {OUT_OF_SCOPE}


def test_nearer_agent_examples_outvote_the_out_of_scope_ones():
    neighbours = [n("a", 0.70), n("a", 0.68), n(OUT_OF_SCOPE, 0.60), n(OUT_OF_SCOPE, 0.59),
                  n(OUT_OF_SCOPE, 0.58)]
    decision = decide(neighbours, policy=POLICY)

    assert decision.routed and decision.agent_type == "a"
    assert 0 < decision.out_of_scope < 0.5
    assert decision.candidates == (("a", 1.0),) and decision.confidence == 1.0


def test_only_out_of_scope_examples_nearby_means_no_candidate_at_all():
    decision = decide([n(OUT_OF_SCOPE, 0.7), n(OUT_OF_SCOPE, 0.6)], policy=POLICY)
    assert not decision.routed and decision.agent_type is None and decision.candidates == ()
    assert decision.out_of_scope == 1.0 and "no agent does" in decision.reason


def test_the_policy_switches_the_out_of_scope_examples_off():
    neighbours = [n(OUT_OF_SCOPE, 0.62), n("a", 0.6), n(OUT_OF_SCOPE, 0.58)]
    off = dataclasses.replace(POLICY, out_of_scope_examples=False)
    decision = decide(neighbours, policy=off)
    assert decision.routed and decision.agent_type == "a" and decision.out_of_scope == 0.0


def test_calibration_keeps_out_of_scope_rejections_at_every_threshold():
    neighbours = {"far": [n(OUT_OF_SCOPE, 0.9), n("a", 0.7)],
                  "farther": [n(OUT_OF_SCOPE, 0.9), n("a", 0.7)],
                  "near": [n("a", 0.6)]}

    class Scripted:
        policy = POLICY

        def decide_many(self, descriptions: Any, policy: RoutingPolicy | None = None
                        ) -> list[Decision]:
            return [decide(neighbours[d], policy=policy or POLICY) for d in descriptions]

    lines = [LabelledLine("far", None), LabelledLine("farther", None), LabelledLine("near", "a")]
    policy = calibrate(Scripted(), lines)
    # The two out-of-scope lines are rejected whatever the thresholds: no threshold above the
    # in-scope line's similarity (0.6) is needed to reject them.
    assert policy.min_similarity <= 0.6 and policy.min_confidence == 0.0


# --- the phrases ---------------------------------------------------------------------------------


def test_the_sentinel_can_never_be_an_agent_name_and_the_phrases_are_distinct():
    assert not AGENT_TYPE_NAME.fullmatch(OUT_OF_SCOPE)
    assert CURATED_FOR == set(BUILTIN_AGENTS)
    assert len(set(PHRASES)) == len(PHRASES) == sum(len(g) for g in CATEGORIES.values())


def test_a_claim_on_one_phrase_takes_its_whole_category():
    categories = ["travel", "travel", "weather"]
    vectors = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)])
    close = unit(1, 0.1, 0)[None, :]
    assert float(close[0] @ vectors[0]) >= CLAIMED_SIMILARITY
    assert unclaimed(categories, vectors, close).tolist() == [False, False, True]
    assert unclaimed(categories, vectors, np.zeros((0, 3))).tolist() == [True, True, True]


# --- with the real model -------------------------------------------------------------------------


class Translator(Agent):
    spec = AgentSpec(
        name="translator", description="translates text between languages",
        capabilities=("translate text into another language",),
        examples=("translate this paragraph into French", "put this email into German",
                  "how do you say good night in Italian"))

    async def run(self, task: AgentTask) -> dict:
        return {}


def test_the_built_in_agents_claim_no_phrase(router: SemanticRouter):
    indexed = [e.text for e in router.index.examples(OUT_OF_SCOPE)]
    assert indexed == list(PHRASES)
    assert OUT_OF_SCOPE not in router.agent_types


@pytest.mark.parametrize("description", [
    "please book a hotel room in Madrid for two nights",
    "generate a picture of a cat wearing a hat",
    "what's the weather in Tokyo tomorrow",
    "remind me to call the bank at noon",
    "write a love poem for my girlfriend",
    "order sushi for dinner",
])
def test_tasks_no_agent_does_are_rejected_by_the_out_of_scope_examples(
        router: SemanticRouter, description: str):
    (decision,) = router.decide_many([description])
    assert not decision.routed and "no agent does" in decision.reason
    assert decision.agent_type != OUT_OF_SCOPE
    assert all(agent_type != OUT_OF_SCOPE for agent_type, _ in decision.candidates)


def test_switched_off_the_nearest_agent_type_may_take_such_a_task(router: SemanticRouter):
    description = "translate this email into Portuguese"
    off = dataclasses.replace(router.policy, out_of_scope_examples=False)
    (on,), (without,) = router.decide_many([description]), router.decide_many([description], off)
    assert not on.routed and on.out_of_scope > 0.5
    assert without.out_of_scope == 0.0 and "no agent does" not in without.reason
    assert all(x.agent_type != OUT_OF_SCOPE for x in without.explanation)


def test_a_third_party_agent_claims_the_category_it_declares(shared: Embedder):
    router = SemanticRouter(BUILTIN_SPECS, shared)
    task = "translate the welcome message into Portuguese"
    (before,) = router.decide_many([task])
    router.add_type(Translator.spec)
    (claimed,) = router.decide_many([task])
    kept = {e.text for e in router.index.examples(OUT_OF_SCOPE)}
    router.remove_type("translator")
    (after,) = router.decide_many([task])

    assert not before.routed
    assert claimed.routed and claimed.agent_type == "translator"
    assert not set(CATEGORIES["languages"]) & kept and set(CATEGORIES["chit_chat"]) <= kept
    assert not after.routed and len(router.index.examples(OUT_OF_SCOPE)) == len(PHRASES)
