"""One collection in memory and its hybrid search: dense kNN and BM25, fused by reciprocal rank.

`CollectionIndex` holds a collection's chunks (text and offsets), its documents (name and
metadata), a `VectorIndex` and a `LexicalIndex`, all keyed by the stored chunk ids; it is a
cache of what storage holds and is rebuilt from it (`ml.knowledge.collections.load_collection`).

Guarantees of `search(query_vector, query_text, k, where)`:
- Each ranking (dense by cosine, lexical by BM25) contributes `1 / (rrf_k + rank)` (rank from
  1) for each of its best `candidates` chunks; a chunk's fused score is the sum, and the best
  `k` by fused score are returned (ties by chunk id), each with its text, document id and
  name, offsets into the document's text, fused score, and its dense and lexical scores.
- Only chunks of documents whose metadata matches `where` (`ml.knowledge.index.matches`) are
  considered, by both rankings.
- After `remove_document`, none of that document's chunks is returned, from the next call on.
- The same contents and query give the same results, however the contents were loaded (with
  the exact index; the approximate one's graph depends on the order and batching of additions,
  so the rare chunk it misses may differ).
- Not thread-safe: its owner serialises calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml.knowledge.index import VectorIndex, matches
from ml.knowledge.lexical import LexicalIndex

DEFAULT_K = 5
DEFAULT_CANDIDATES = 50
RRF_K = 60


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk as the index keeps it: its stored id, document, position and offsets."""

    id: int
    document_id: str
    ordinal: int
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class DocumentInfo:
    id: str
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchHit:
    """A chunk found by `search`: `score` is its fused score; `dense_score` its cosine to the
    query and `lexical_score` its BM25 score, None when that ranking did not retrieve it."""

    chunk_id: int
    document_id: str
    document_name: str
    ordinal: int
    text: str
    start: int
    end: int
    score: float
    dense_score: float | None
    lexical_score: float | None


class CollectionIndex:
    """The searchable form of one tenant's collection; see the module's guarantees."""

    def __init__(self, tenant: str, name: str, dimension: int,
                 **vector_options: Any) -> None:
        self.tenant = tenant
        self.name = name
        self.dimension = dimension
        self.vectors = VectorIndex(dimension, **vector_options)
        self.lexical = LexicalIndex()
        self.chunks: dict[int, ChunkRecord] = {}
        self.documents: dict[str, DocumentInfo] = {}

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.name)

    def __len__(self) -> int:
        """How many chunks the collection has."""
        return len(self.chunks)

    def memory_bytes(self) -> int:
        """An estimate of what the collection holds in memory: vectors, BM25, chunk texts."""
        texts = sum(len(chunk.text) for chunk in self.chunks.values())
        return (self.vectors.memory_bytes() + self.lexical.memory_bytes()
                + 2 * texts + 200 * len(self.chunks) + 300 * len(self.documents))

    def add_document(self, document: DocumentInfo, chunks: Sequence[ChunkRecord],
                     vectors: np.ndarray) -> None:
        """Add a document and its chunks (`vectors[i]` is the vector of `chunks[i]`),
        replacing whatever the index held for a document of the same id."""
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        if any(chunk.document_id != document.id for chunk in chunks):
            raise ValueError(f"every chunk must belong to document {document.id!r}")
        self.remove_document(document.id)
        self.extend_document(document, chunks, vectors)

    def extend_document(self, document: DocumentInfo, chunks: Sequence[ChunkRecord],
                        vectors: np.ndarray) -> None:
        """Add more chunks of a document (registering it if new), keeping those it has: how a
        collection is loaded from storage a page at a time."""
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        ids = [chunk.id for chunk in chunks]
        self.vectors.add(document.id, ids, vectors, document.metadata)
        self.lexical.add(ids, [chunk.text for chunk in chunks])
        self.documents[document.id] = document
        for chunk in chunks:
            self.chunks[chunk.id] = chunk

    def extend_documents(self, documents: Sequence[tuple[DocumentInfo, Sequence[ChunkRecord]]],
                         vectors: np.ndarray) -> None:
        """`extend_document` for several documents at once, their vectors in one index
        operation (`vectors` holds every document's chunk vectors, in order): how a page of
        storage is loaded."""
        if sum(len(chunks) for _, chunks in documents) != len(vectors):
            raise ValueError("one vector per chunk")
        self.vectors.add_many([(document.id, [chunk.id for chunk in chunks], document.metadata)
                               for document, chunks in documents], vectors)
        for document, chunks in documents:
            self.lexical.add([chunk.id for chunk in chunks], [chunk.text for chunk in chunks])
            self.documents[document.id] = document
            for chunk in chunks:
                self.chunks[chunk.id] = chunk

    def remove_document(self, document_id: str) -> int:
        """Take a document and its chunks out; how many chunks it had."""
        ids = list(self.vectors.chunks_of.get(document_id, []))
        self.vectors.remove_document(document_id)
        self.lexical.remove(ids)
        self.documents.pop(document_id, None)
        for chunk_id in ids:
            self.chunks.pop(chunk_id, None)
        return len(ids)

    def search(self, query_vector: np.ndarray, query_text: str, k: int = DEFAULT_K,
               where: Mapping[str, Any] | None = None, *,
               candidates: int = DEFAULT_CANDIDATES, rrf_k: int = RRF_K) -> list[SearchHit]:
        """The best `k` chunks for the query by fused rank; see the module's guarantees."""
        if k < 1:
            raise ValueError("k must be at least 1")
        depth = max(candidates, k)
        dense = self.vectors.search(query_vector, depth, where)
        allowed = None if not where else self._allowed(where)
        lexical = self.lexical.search(query_text, depth, allowed)
        fused: dict[int, float] = {}
        for ranking in (dense, lexical):
            for rank, (chunk_id, _) in enumerate(ranking, start=1):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (rrf_k + rank)
        dense_scores, lexical_scores = dict(dense), dict(lexical)
        best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
        return [self._hit(chunk_id, score, dense_scores.get(chunk_id),
                          lexical_scores.get(chunk_id)) for chunk_id, score in best]

    def best_similarity(self, query_vector: np.ndarray,
                        where: Mapping[str, Any] | None = None) -> float:
        """The cosine of the chunk nearest the query (-1.0 when there is none)."""
        found = self.vectors.search(query_vector, 1, where)
        return found[0][1] if found else -1.0

    def _allowed(self, where: Mapping[str, Any]) -> Any:
        documents = {document_id for document_id, info in self.documents.items()
                     if matches(info.metadata, where)}
        chunks = self.chunks

        def allowed(chunk_id: int) -> bool:
            chunk = chunks.get(chunk_id)
            return chunk is not None and chunk.document_id in documents

        return allowed

    def _hit(self, chunk_id: int, score: float, dense: float | None,
             lexical: float | None) -> SearchHit:
        chunk = self.chunks[chunk_id]
        document = self.documents[chunk.document_id]
        return SearchHit(chunk_id, chunk.document_id, document.name, chunk.ordinal, chunk.text,
                         chunk.start, chunk.end, score, dense, lexical)
