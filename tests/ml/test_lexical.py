"""Word overlap: TF-IDF cosines over the router's vocabulary, and how the router adds them to the
cosine similarity of each candidate example."""

from __future__ import annotations

import dataclasses
import math

import pytest

from actors.agents import BUILTIN_SPECS
from ml.embeddings import Embedder
from ml.lexical import LexicalScorer, words
from ml.semantic_router import SemanticRouter

CORPUS = ["validate this JSON against the schema", "sort the rows by price",
          "price of the rows", "a b c"]


def test_words_are_lower_cased_and_two_letters_or_more():
    assert words("Sort the Rows, by price: a b 42") == ["sort", "the", "rows", "by", "price", "42"]


def test_scores_are_smoothed_sublinear_tf_idf_cosines():
    scorer = LexicalScorer(CORPUS)
    n = len(CORPUS)
    idf = {w: math.log((1 + n) / (1 + df)) + 1
           for w, df in {"sort": 1, "rows": 2, "price": 2, "the": 3, "by": 1}.items()}
    query = scorer.vector("sort sort the rows")
    weights = {"sort": (1 + math.log(2)) * idf["sort"], "the": idf["the"], "rows": idf["rows"]}
    norm = math.sqrt(sum(w * w for w in weights.values()))
    assert query == pytest.approx({w: v / norm for w, v in weights.items()})
    closer, further = "sort the rows by price", "price of the rows"
    assert scorer.similarity(query, closer) > scorer.similarity(query, further) > 0
    assert scorer.similarity(query, "a b c") == 0.0
    assert scorer.similarity(scorer.vector("sort the rows by price"),
                             "sort the rows by price") == pytest.approx(1.0)


def test_unknown_words_count_for_nothing_and_texts_are_prepared_first():
    scorer = LexicalScorer(CORPUS, prepare=lambda text: text.replace("order", "sort"))
    assert scorer.vector("penguins flamingos") == {}
    assert scorer.similarity(scorer.vector("order by price"), "sort by price") == \
        pytest.approx(1.0)


def test_word_overlap_adds_to_the_cosine_and_can_be_switched_off(shared: Embedder):
    router = SemanticRouter(BUILTIN_SPECS, shared)
    task = "validate the webhook events against the event schema"
    plain = dataclasses.replace(router.policy, lexical_weight=0.0)
    (with_words,), (without,) = router.decide_many([task]), router.decide_many([task], plain)

    assert with_words.agent_type == without.agent_type == "validation"
    cosines = {n.text: n.similarity for n in without.explanation}
    for neighbour in with_words.explanation:
        if neighbour.text in cosines:
            assert neighbour.similarity >= cosines[neighbour.text]
    assert with_words.similarity > without.similarity
    with pytest.raises(ValueError, match="lexical_weight"):
        dataclasses.replace(router.policy, lexical_weight=-0.1)
