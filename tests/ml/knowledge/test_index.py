"""The vector index: exact while small, HNSW past its limit with recall@10 ≥ 0.95 against exact
search, documents removed at once (tombstones, then a rebuild), metadata filters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ml.knowledge.index import VectorIndex, matches

DIMENSION = 64


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _clustered(count: int, seed: int, dimension: int = DIMENSION) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(40, dimension))
    return _unit(centers[rng.integers(0, 40, count)] + 0.7 * rng.normal(size=(count, dimension)))


def _fill(index: VectorIndex, vectors: np.ndarray, per_document: int = 50) -> None:
    for first in range(0, len(vectors), per_document):
        ids = list(range(first, min(first + per_document, len(vectors))))
        index.add(f"doc{first // per_document}", ids, vectors[ids],
                  {"team": "sales" if first // per_document % 2 else "support"})


def test_hnsw_finds_at_least_95_percent_of_the_exact_top_10() -> None:
    vectors = _clustered(4000, seed=1, dimension=384)
    exact, approximate = VectorIndex(384), VectorIndex(384, flat_limit=1000)
    _fill(exact, vectors)
    _fill(approximate, vectors)
    assert (exact.kind, approximate.kind) == ("flat", "hnsw")

    queries = _clustered(200, seed=2, dimension=384)
    found = [len({i for i, _ in exact.search(q, 10)} & {i for i, _ in approximate.search(q, 10)})
             for q in queries]
    recall = sum(found) / (10 * len(queries))
    print(f"HNSW recall@10 against exact search: {recall:.3f}")
    assert recall >= 0.95


def test_a_removed_document_leaves_flat_results_at_once() -> None:
    vectors = _clustered(500, seed=3)
    index = VectorIndex(DIMENSION)
    _fill(index, vectors)
    assert index.search(vectors[7], 1)[0][0] == 7

    assert index.remove_document("doc0") == 50

    hits = index.search(vectors[7], 20)
    assert all(chunk_id >= 50 for chunk_id, _ in hits) and len(hits) == 20
    assert len(index) == 450


def test_hnsw_skips_tombstones_at_once_and_rebuilds_past_the_fraction() -> None:
    vectors = _clustered(1200, seed=4)
    index = VectorIndex(DIMENSION, flat_limit=800, tombstone_fraction=0.2)
    _fill(index, vectors)
    assert index.kind == "hnsw"

    index.remove_document("doc0")
    assert len(index.tombstones) == 50
    assert all(chunk_id >= 50 for chunk_id, _ in index.search(vectors[3], 30))
    for number in range(1, 5):  # 250 of 1200 removed: past a fifth
        index.remove_document(f"doc{number}")
    assert index.tombstones == set() and len(index) == 950
    assert index.search(vectors[600], 1)[0][0] == 600


def test_a_rebuild_that_leaves_few_chunks_goes_back_to_exact_search() -> None:
    vectors = _clustered(1000, seed=5)
    index = VectorIndex(DIMENSION, flat_limit=600)
    _fill(index, vectors)
    for number in range(15):
        index.remove_document(f"doc{number}")
    assert (index.kind, len(index)) == ("flat", 250)  # at most half the limit: exact again
    assert index.search(vectors[999], 1)[0][0] == 999


def test_filters_keep_only_matching_documents_even_when_rare() -> None:
    vectors = _clustered(600, seed=6)
    index = VectorIndex(DIMENSION)
    _fill(index, vectors)
    index.add("rare", [10_000], vectors[:1] * -1, {"team": "legal", "year": 2026})

    hits = index.search(vectors[0], 3, where={"team": "legal"})
    assert [chunk_id for chunk_id, _ in hits] == [10_000]
    sales = index.search(vectors[0], 40, where={"team": ["sales"]})
    assert len(sales) == 40 and all(index.document_of[i].startswith("doc") for i, _ in sales)
    assert all(int(index.document_of[i][3:]) % 2 == 1 for i, _ in sales)
    assert index.search(vectors[0], 3, where={"team": "nobody"}) == []


def test_matching_needs_every_key_equal_or_in_a_list() -> None:
    assert matches({"team": "sales", "year": 2026}, {"team": "sales"})
    assert matches({"team": "sales"}, {"team": ["hr", "sales"]})
    assert not matches({"team": "sales"}, {"team": "sales", "year": 2026})
    assert matches({}, None)


def test_wrong_dimensions_and_live_ids_are_refused_without_change() -> None:
    index = VectorIndex(DIMENSION)
    index.add("a", [1, 2], _clustered(2, seed=7))
    with pytest.raises(ValueError, match="dimension"):
        index.add("b", [3], np.ones((1, DIMENSION + 1), dtype=np.float32))
    with pytest.raises(ValueError, match="already"):
        index.add("b", [2, 3], _clustered(2, seed=8))
    with pytest.raises(ValueError, match="dimensions"):
        index.search(np.ones(3, dtype=np.float32), 1)
    assert len(index) == 2 and "b" not in index.chunks_of


def test_memory_estimates_grow_with_size_and_hnsw_costs_more_per_vector() -> None:
    vectors = _clustered(1000, seed=9, dimension=384)
    flat, hnsw = VectorIndex(384), VectorIndex(384, flat_limit=10)
    _fill(flat, vectors)
    _fill(hnsw, vectors)
    assert 1000 * 384 * 4 < flat.memory_bytes() < hnsw.memory_bytes() < 1000 * 2500


def test_several_documents_are_added_in_one_operation_or_not_at_all() -> None:
    vectors = _clustered(30, seed=10)
    index = VectorIndex(DIMENSION)
    index.add("old", [1], vectors[:1])
    with pytest.raises(ValueError, match="already"):
        index.add_many([("a", [10, 11], {}), ("b", [1], {})], vectors[1:4])
    assert len(index) == 1 and "a" not in index.chunks_of and "a" not in index.metadata

    index.add_many([("a", [10, 11], {"team": "x"}), ("b", [12], {"team": "y"})], vectors[1:4])
    assert index.chunks_of == {"old": [1], "a": [10, 11], "b": [12]}
    assert [i for i, _ in index.search(vectors[3], 1, where={"team": "y"})] == [12]
    assert index.remove_document("a") == 2 and len(index) == 2


def test_large_hnsw_additions_use_the_build_threads_then_restore_the_callers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    before = faiss.omp_get_max_threads()
    seen: list[int] = []
    add: Any = faiss.IndexIDMap2.add_with_ids

    def counting_add(self: object, *args: object) -> object:
        seen.append(faiss.omp_get_max_threads())
        return add(self, *args)

    monkeypatch.setattr(faiss.IndexIDMap2, "add_with_ids", counting_add)
    index = VectorIndex(DIMENSION, flat_limit=100, build_threads=3)
    vectors = _clustered(400, seed=11)
    index.add("small", list(range(50)), vectors[:50])  # flat, few: the caller's threads
    index.add("large", list(range(50, 400)), vectors[50:])  # past the limit: HNSW
    assert index.kind == "hnsw"
    # the rebuild re-adds the 50 it had (too few to spread), then the 350 new use 3 threads
    assert seen == [before, before, 3]
    assert faiss.omp_get_max_threads() == before
    assert index.search(vectors[300], 1)[0][0] == 300
