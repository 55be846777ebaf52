"""Routing with the `knowledge` agent registered (it always is) and `llm` (when a model is
configured): thresholds fitted on the dev set, quality measured on the holdouts.

tests/data/routing_holdout_knowledge.jsonl and routing_holdout_knowledge2.jsonl were each written
before their first evaluation; their first figures with `llm` (in-scope top-1 0.875 and 0.887,
out-of-scope rejection 1.000 and 0.900) missed the issue's goal of 0.97 in scope. Both are now
spent: their misses were read as development data, and the phrasing cues of `ml.cues` (stored
document or inline text; prose, listed labels or code) were written from them and from the dev
set. With the cues, both give 1.000 in scope and 1.000 rejection with `llm`; without it the
second gives 1.000 in scope and 0.972 rejection (its `llm` lines count as out of scope). The bars
here guard those figures; they are no measure of quality on unseen requests.
routing_holdout_knowledge3.jsonl was written from the agent types' descriptions alone and
evaluated once on the cues' code of the time (its `llm` lines were then marked optional, as the
earlier sets' are, so that without `llm` they count as out of scope): without `llm`, in-scope
top-1 0.985 (64 of 65) and out-of-scope rejection 0.911, both meeting the goal; with `llm`, 0.953
(81 of 85: two `llm` requests about a given text rejected, a labelling request taken by
text_analysis, and an "add to the collection" request taken by text_analysis) and 0.960
rejection, the in-scope goal of 0.97 missed by two lines. It is now spent too: its misses were
read as development data, and from them and 40 new lines of the dev set came the placeholders
for passages in single quotes and prose after a colon (`ml.semantic_router.instruction_text`),
the cues for questions about a given text, summaries for a reader, filing texts in a collection,
operations on running systems and label sets beyond the sentiment scale (`ml.cues`), and one
`llm` example of such a label set. On that code it gives, as development figures, 1.000 in scope
(85 of 85) and 1.000 rejection with `llm`, 1.000 (65 of 65) and 0.978 rejection without.
routing_holdout_knowledge4.jsonl, written from the types' descriptions alone before that code was
evaluated on it, was evaluated once on it: with `llm`, in-scope top-1 0.976 (83 of 85) and
rejection 1.000; without, 1.000 (65 of 65) and 0.978; `knowledge` 30 of 30 in both. That meets
the goal (0.97 in scope, 0.90 rejection) in both configurations."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.registry import agent_specs, load_agent_types
from ml.cues import (DocumentCues, asks_about_given_text, asks_for_operations, cue_bonuses,
                     document_cues, lists_labels, stores_documents)
from ml.embeddings import Embedder
from ml.evaluation import calibrate, evaluate, load_lines
from ml.out_of_scope import CATEGORIES, OUT_OF_SCOPE, phrases
from ml.semantic_router import SemanticRouter

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def with_knowledge_and_llm(shared: Embedder) -> SemanticRouter:
    return SemanticRouter(agent_specs(load_agent_types(llm=True)), shared)


@pytest.fixture(scope="module")
def with_knowledge(shared: Embedder) -> SemanticRouter:
    return SemanticRouter(agent_specs(load_agent_types()), shared)


@pytest.mark.parametrize(("holdout", "in_scope", "rejected", "knowledge_right"), [
    ("routing_holdout_knowledge.jsonl", 0.97, 0.95, 0.95),
    ("routing_holdout_knowledge2.jsonl", 0.97, 0.95, 0.95),
    # spent: 0.953 in scope (81 of 85) and 0.96 rejection at its one evaluation; 1.000 and
    # 1.000 (30/30 knowledge) as a development set on the code that read its misses
    ("routing_holdout_knowledge3.jsonl", 0.98, 0.96, 0.96),
    # the fourth, fresh, evaluated once on the final code: 0.976 (83 of 85), 1.000, 30/30
    ("routing_holdout_knowledge4.jsonl", 0.97, 0.97, 0.97),
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


@pytest.mark.parametrize(("holdout", "in_scope", "rejected"), [
    ("routing_holdout_knowledge2.jsonl", 0.97, 0.95),
    # spent: 0.985 in scope (64 of 65) and 0.911 rejection at its one evaluation; 1.000 and
    # 0.978 as a development set
    ("routing_holdout_knowledge3.jsonl", 0.98, 0.95),
    # the fourth without llm, evaluated once: 1.000 (65 of 65), 0.978 rejection
    ("routing_holdout_knowledge4.jsonl", 0.98, 0.95),
])
def test_without_llm_its_requests_are_out_of_scope(with_knowledge: SemanticRouter, holdout: str,
                                                   in_scope: float, rejected: float):
    policy = calibrate(with_knowledge, load_lines(DATA / "routing_dev.jsonl"))
    report = evaluate(with_knowledge, load_lines(DATA / holdout), policy)
    assert report.accuracy >= in_scope and report.oos_recall >= rejected, report.to_text()


@pytest.mark.parametrize(("description", "stored", "inline"), [
    ("what does our travel policy say about taxis?", True, False),
    ("per the sales playbook, when can we discount?", True, False),
    ("based only on the text below, when does the lease end?", False, True),
    ("give me a 2-sentence summary of this policy document", False, True),
    ("add these documents to the handbook collection", True, True),
    ("group this CSV by country", False, False),
])
def test_document_cues_tell_a_stored_document_from_a_given_text(description: str, stored: bool,
                                                                inline: bool):
    assert document_cues(description) == DocumentCues(stored=stored, inline=inline)


def test_cue_bonuses_go_only_to_registered_types_and_unclaimed_categories():
    with_llm, without = {"knowledge": None, "llm": None}, {"knowledge": None}
    every = set(CATEGORIES)
    claimed_by_llm = every - {"creative_writing", "writing_and_editing", "languages"}
    stored_question = "what does the employee handbook say about overtime?"
    note = "draft a thank-you note to our supplier"
    code = "write a Python function that parses dates"
    assert cue_bonuses(stored_question, 0.15, with_llm, claimed_by_llm) == {
        "knowledge": 0.15, "llm": -0.15}
    assert cue_bonuses(stored_question, 0.15, without, every) == {"knowledge": 0.15}
    assert cue_bonuses(note, 0.15, with_llm, claimed_by_llm) == {"llm": 0.15}
    assert cue_bonuses(note, 0.15, without, every) == {OUT_OF_SCOPE: 0.15}
    # a third-party type that claims the writing categories keeps such requests
    assert cue_bonuses(note, 0.15, without, every - {"languages"}) == {}
    assert cue_bonuses(code, 0.15, with_llm, claimed_by_llm) == {OUT_OF_SCOPE: 0.15}
    assert cue_bonuses(code, 0.15, with_llm, every - {"programming"}) == {}
    assert cue_bonuses(stored_question, 0.0, with_llm, every) == {}


@pytest.mark.parametrize(("description", "asks"), [
    ("what is the central claim of this paragraph? \"text\"", True),
    ("in the email below, when does the offer expire?", True),
    ("what's the sentiment of this comment? \"text\"", False),
    ("how readable is this paragraph?", False),
    ("what does our leave policy say about this case?", False),
    ("what is the capital of Peru?", False),
])
def test_a_question_about_what_a_given_text_says_is_told_from_a_measurement(description: str,
                                                                           asks: bool):
    assert asks_about_given_text(description) is asks


def test_filing_operations_and_label_sets_are_told_by_their_phrasing():
    assert stores_documents("please save this memo into the legal collection: \"text\"")
    assert stores_documents("upload the attached PDF to our knowledge base")
    assert not stores_documents("add 4 and 5")
    assert not stores_documents("what does the hr collection say about parking?")
    assert asks_for_operations("roll back the search service to last week's version")
    assert asks_for_operations("could you merge my pull request into main")
    assert not asks_for_operations("merge these two tables on the id column")
    assert not asks_for_operations("which pools restarted replicas today?")
    assert lists_labels("label each answer as positive, negative or off-topic")
    assert not lists_labels("label each answer as positive, negative or neutral")


@pytest.mark.parametrize(("description", "expected"), [
    # a named document of the tenant's, in words near another type's examples
    ("per the purchasing playbook, who signs off on orders above 10,000 euros?", "knowledge"),
    ("according to the onboarding guidelines, when do new hires get a laptop?", "knowledge"),
    # the same kind of question about a text given with the task
    ("using only the passage above, who pays for repairs?", "llm"),
    # prose or listed labels, not a measurement
    ("turn these release notes into a cheerful update for customers", "llm"),
    ("sort these tickets into billing, outage or account access", "llm"),
    # measuring a text stays text analysis
    ("how readable is this paragraph?", "text_analysis"),
    # a question about what a passage given inline says, or re-telling it for a reader
    ("what reason does the author give in this paragraph? 'We moved the plant to Porto "
     "because the port handles our exports faster and wages there are stable.'", "llm"),
    ("summarise this note for a new customer: The service window runs from 8 to 6 on "
     "weekdays, and urgent calls are answered within the hour by the duty engineer.", "llm"),
    # filing a text given inline in a collection
    ("store this paragraph in the 'legal' collection: The supplier is liable for defects "
     "found within two years of the delivery date.", "knowledge"),
])
def test_the_reference_decides_between_stored_documents_and_a_given_text(
        with_knowledge_and_llm: SemanticRouter, description: str, expected: str):
    (decision,) = with_knowledge_and_llm.decide_many([description])
    assert decision.routed and decision.agent_type == expected, decision.reason


@pytest.mark.parametrize("description", [
    "write a C# function that validates a login form",
    "text my cousin that the party starts at nine",
    # operations on running systems, even near a knowledge example about deploying
    "deploy the new search service to production",
    "shut down the old staging cluster",
])
def test_code_and_personal_messages_stay_out_of_scope_with_llm(
        with_knowledge_and_llm: SemanticRouter, description: str):
    (decision,) = with_knowledge_and_llm.decide_many([description])
    assert not decision.routed, decision.reason


def test_writing_requests_are_out_of_scope_without_llm(with_knowledge: SemanticRouter):
    decisions = with_knowledge.decide_many([
        "sort these comments into bug, question or praise",
        "rewrite this product blurb so it sounds more upbeat"])
    assert not any(d.routed for d in decisions), [d.reason for d in decisions]


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
