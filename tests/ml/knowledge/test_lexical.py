"""BM25 over chunk texts: plural folding and stop words, only positive matches, filters,
removal effective at the next search, deterministic ties."""

from __future__ import annotations

from ml.knowledge.lexical import LexicalIndex, terms


def test_terms_fold_plurals_and_drop_stop_words() -> None:
    assert terms("What are the Refunds policies for classes?") == ["refund", "policy", "class"]


def test_only_matching_chunks_come_back_best_first() -> None:
    index = LexicalIndex()
    index.add([1, 2, 3], ["refunds within thirty days", "shipping takes days",
                          "password length rules"])
    hits = index.search("refund days", 5)
    assert [chunk_id for chunk_id, _ in hits] == [1, 2]
    assert hits[0][1] > hits[1][1] > 0
    assert index.search("unrelated words entirely", 5) == []
    assert index.search("the and of", 5) == []


def test_removed_chunks_and_filtered_chunks_are_never_returned() -> None:
    index = LexicalIndex()
    index.add([1, 2, 3], ["refund policy", "refund card", "refund store credit"])
    index.remove([2])
    assert [chunk_id for chunk_id, _ in index.search("refund", 5)] == [1, 3]
    assert [chunk_id for chunk_id, _ in index.search("refund", 5, lambda i: i != 1)] == [3]
    index.add([4], ["refund"])
    assert 4 in [chunk_id for chunk_id, _ in index.search("refund", 5)]


def test_ties_break_by_chunk_id() -> None:
    index = LexicalIndex()
    index.add([9, 3, 5], ["same words here", "same words here", "same words here"])
    assert [chunk_id for chunk_id, _ in index.search("same words", 3)] == [3, 5, 9]
