"""One collection's vector index: exact search while small, HNSW past a documented size.

Kinds and what they cost (d = dimension, 384 for MiniLM; n = live chunks):
- "flat" (`IndexIDMap2(IndexFlatIP)`), up to `flat_limit` chunks (default 20,000): exact
  inner-product search, O(n·d) per query (measured 14 ms at 20,000 × 384 on a busy 2-core
  machine; a few ms on an idle one). Memory about n·(4d + 8 + 32 + 100) bytes (vectors, ids,
  the id map and this class's bookkeeping): 1.7 KB per chunk, 34 MB at 20,000.
- "hnsw" (`IndexIDMap2(IndexHNSWFlat)`, inner product, M = 32, efConstruction 64, efSearch
  192), past `flat_limit`: approximate, about O(log n) per query. Memory about
  n·(4d + 8·M + 8 + 32 + 100) bytes (plus two-way links at level 0): 1.9 KB per chunk,
  193 MB at 100,000. It falls back to flat when a rebuild finds at most half of
  `flat_limit` chunks left. Building costs about O(n·efConstruction·log n) and searching
  O(efSearch·log n): a cheap graph (efConstruction 64 rather than 200, three to five times
  faster to build) searched a little wider finds more of the exact top 10 than the dearer
  graph searched at 128 (on near-uniform 384-dimension vectors, the hardest case: recall@10
  0.972 against 0.966). Additions of `PARALLEL_ADD` vectors or more (a rebuild, a page of a
  collection loaded from storage) use `build_threads` OpenMP threads (default: the machine's
  CPUs), whatever the process's default (Ray gives actors one).

Guarantees:
- Vectors are expected to be L2-normalised float32, so a score is a cosine similarity; ids are
  the stored chunk ids (int64). Adding a vector of another dimension, or an id already live, is
  `ValueError`, and nothing is added (`add_many` adds all of its documents or none).
- `remove_document` takes all of a document's chunks out of search results at once: the flat
  index removes them; HNSW (which cannot remove) records them as tombstones that searches skip,
  and rebuilds without them once tombstones exceed `tombstone_fraction` of its vectors.
- `search(query, k, where)` returns at most k (id, score) pairs, best first, only of live
  chunks whose document's metadata matches `where`: every key present and equal (or, for a
  list value, one of the list). Candidates are over-fetched and filtered, fetching more until
  k match or the index is exhausted, so a selective filter costs more, never misses on flat.
- Not thread-safe: its owner serialises calls.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_FLAT_LIMIT = 20_000
DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 64
DEFAULT_EF_SEARCH = 192
DEFAULT_TOMBSTONE_FRACTION = 0.2
_ID_MAP_BYTES = 32
PARALLEL_ADD = 256  # HNSW additions at least this large are spread over `build_threads`
_OVERFETCH = 4


def matches(metadata: Mapping[str, Any], where: Mapping[str, Any] | None) -> bool:
    """Whether a document's `metadata` satisfies the filter `where` (see the module)."""
    if not where:
        return True
    for key, wanted in where.items():
        if key not in metadata:
            return False
        value = metadata[key]
        if isinstance(wanted, list):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


class VectorIndex:
    """The vectors of one collection's chunks, with each chunk's document and each document's
    metadata; see the module's guarantees."""

    def __init__(self, dimension: int, *, flat_limit: int = DEFAULT_FLAT_LIMIT,
                 hnsw_m: int = DEFAULT_HNSW_M, ef_construction: int = DEFAULT_EF_CONSTRUCTION,
                 ef_search: int = DEFAULT_EF_SEARCH,
                 tombstone_fraction: float = DEFAULT_TOMBSTONE_FRACTION,
                 build_threads: int | None = None) -> None:
        if dimension < 1 or flat_limit < 1 or hnsw_m < 2 or not 0 < tombstone_fraction < 1:
            raise ValueError("dimension, flat_limit, hnsw_m and tombstone_fraction are out of "
                             "range")
        if build_threads is not None and build_threads < 1:
            raise ValueError("build_threads must be at least 1")
        self.dimension = dimension
        self.flat_limit = flat_limit
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.tombstone_fraction = tombstone_fraction
        self.build_threads = build_threads or os.cpu_count() or 1
        self.document_of: dict[int, str] = {}
        self.chunks_of: dict[str, list[int]] = {}
        self.metadata: dict[str, dict[str, Any]] = {}
        self.tombstones: set[int] = set()
        self.kind = "flat"
        self._inner, self._index = self._new_index("flat")

    def __len__(self) -> int:
        """How many live chunks the index holds."""
        return len(self.document_of)

    def _new_index(self, kind: str) -> tuple[Any, Any]:
        import faiss

        inner: Any
        if kind == "flat":
            inner = faiss.IndexFlatIP(self.dimension)
        else:
            inner = faiss.IndexHNSWFlat(self.dimension, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.ef_construction
            inner.hnsw.efSearch = self.ef_search
        return inner, faiss.IndexIDMap2(inner)

    def memory_bytes(self) -> int:
        """An estimate of the memory the index holds, tombstones included."""
        stored = int(self._index.ntotal)
        per_vector = 4 * self.dimension + 8 + _ID_MAP_BYTES
        if self.kind == "hnsw":
            per_vector += 8 * self.hnsw_m
        bookkeeping = 100 * len(self.document_of) + 64 * len(self.tombstones)
        return stored * per_vector + bookkeeping

    def add(self, document_id: str, ids: Sequence[int], vectors: np.ndarray,
            metadata: Mapping[str, Any] | None = None) -> None:
        """Add a document's chunks (`ids[i]` has `vectors[i]`) and set its metadata."""
        self.add_many([(document_id, ids, metadata)], vectors)

    def add_many(self, documents: Sequence[tuple[str, Sequence[int], Mapping[str, Any] | None]],
                 vectors: np.ndarray) -> None:
        """Add the chunks of several documents in one index operation: each entry is (document
        id, its chunk ids, its metadata), and `vectors` holds the vectors of every entry's
        chunks in that order."""
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        wanted = [int(i) for _, ids, _ in documents for i in ids]
        if (matrix.ndim != 2 or matrix.shape[1] != self.dimension
                or matrix.shape[0] != len(wanted)):
            raise ValueError(f"expected {len(wanted)} vectors of dimension {self.dimension}, "
                             f"got an array of shape {matrix.shape}")
        live = [i for i in wanted if i in self.document_of]
        if live or len(set(wanted)) != len(wanted):
            raise ValueError(f"chunk ids already in the index: {sorted(set(live))[:5]}")
        for document_id, _, metadata in documents:
            self.metadata[document_id] = dict(metadata or {})
        if not wanted:
            return
        if self.tombstones.intersection(wanted):
            self._rebuild(force_kind=self.kind)
        if self.kind == "flat" and len(self.document_of) + len(wanted) > self.flat_limit:
            self._rebuild(force_kind="hnsw")
        with self._threads(len(wanted)):
            self._index.add_with_ids(matrix, np.asarray(wanted, dtype=np.int64))
        for document_id, ids, _ in documents:
            for chunk_id in ids:
                self.document_of[int(chunk_id)] = document_id
            self.chunks_of.setdefault(document_id, []).extend(int(i) for i in ids)

    @contextlib.contextmanager
    def _threads(self, adding: int) -> Iterator[None]:
        """`build_threads` OpenMP threads for this thread's faiss calls while an HNSW index
        takes `PARALLEL_ADD` vectors or more (smaller additions gain nothing from threads)."""
        if self.kind != "hnsw" or adding < PARALLEL_ADD:
            yield
            return
        import faiss

        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.build_threads)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)

    def remove_document(self, document_id: str) -> int:
        """Take a document's chunks out of search at once; how many there were."""
        ids = self.chunks_of.pop(document_id, [])
        self.metadata.pop(document_id, None)
        for chunk_id in ids:
            del self.document_of[chunk_id]
        if not ids:
            return 0
        if self.kind == "flat":
            self._index.remove_ids(np.asarray(ids, dtype=np.int64))
        else:
            self.tombstones.update(ids)
            if len(self.tombstones) > self.tombstone_fraction * self._index.ntotal:
                self._rebuild()
        return len(ids)

    def _rebuild(self, force_kind: str | None = None) -> None:
        """Build the index again from its live vectors, choosing its kind by size."""
        stored = int(self._index.ntotal)
        if stored:
            import faiss

            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            vectors = self._inner.reconstruct_n(0, stored)
            keep = np.fromiter((i not in self.tombstones for i in ids.tolist()), dtype=bool,
                               count=len(ids))
            ids, vectors = ids[keep], vectors[keep]
        else:
            ids = np.zeros(0, dtype=np.int64)
            vectors = np.zeros((0, self.dimension), dtype=np.float32)
        if force_kind is not None:
            kind = force_kind
        elif len(ids) > self.flat_limit or (self.kind == "hnsw"
                                            and len(ids) > self.flat_limit // 2):
            kind = "hnsw"
        else:
            kind = "flat"
        self.kind = kind
        self._inner, self._index = self._new_index(kind)
        self.tombstones.clear()
        if len(ids):
            with self._threads(len(ids)):
                self._index.add_with_ids(np.ascontiguousarray(vectors), ids)

    def search(self, query: np.ndarray, k: int, where: Mapping[str, Any] | None = None
               ) -> list[tuple[int, float]]:
        """The best `k` live chunks for the unit vector `query` matching `where`."""
        if k < 1:
            raise ValueError("k must be at least 1")
        vector = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
        if vector.shape[1] != self.dimension:
            raise ValueError(f"the query has {vector.shape[1]} dimensions, the index "
                             f"{self.dimension}")
        stored = int(self._index.ntotal)
        if not self.document_of:
            return []
        allowed = None if not where else {
            document for document, meta in self.metadata.items() if matches(meta, where)}
        if allowed is not None and not allowed:
            return []
        wanted = k * _OVERFETCH + len(self.tombstones) if where or self.tombstones else k
        fetch = min(stored, wanted)
        while True:
            found = self._search(vector, max(fetch, 1))
            hits = [(chunk_id, score) for chunk_id, score in found
                    if chunk_id in self.document_of
                    and (allowed is None or self.document_of[chunk_id] in allowed)]
            if len(hits) >= k or fetch >= stored:
                return hits[:k]
            fetch = min(stored, fetch * 4)

    def _search(self, vector: np.ndarray, fetch: int) -> list[tuple[int, float]]:
        if self.kind == "hnsw":
            self._inner.hnsw.efSearch = max(self.ef_search, fetch)
        scores, ids = self._index.search(vector, fetch)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
