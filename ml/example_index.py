"""The labelled examples the semantic router searches: texts, each tagged with an agent type.

An `ExampleIndex` is a FAISS inner-product index over unit vectors, so a search scores cosine
similarity. Examples come from three sources: the agents' `declared` capabilities and examples,
examples `learned` from task outcomes, and examples from user `feedback`. Types are added and
removed while the index serves searches (no restart); every method is safe to call from several
threads. faiss is imported when the first index is built, never when this module is imported.

The index keeps each example's vector, so removing a type rebuilds the FAISS index from memory
without encoding anything again.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from storage.errors import InvalidRequest
from storage.messages import AgentSpec, Neighbour

__all__ = ["SOURCES", "Example", "ExampleIndex", "Neighbour", "declared_texts"]

if TYPE_CHECKING:
    from ml.embeddings import Embedder

SOURCES = ("declared", "learned", "feedback")


@dataclasses.dataclass(frozen=True)
class Example:
    """One labelled text: which agent type it belongs to and where it came from."""

    text: str
    agent_type: str
    source: str = "declared"
    key: int | None = None  # the stored example's id, for examples kept in storage


def declared_texts(spec: AgentSpec) -> list[str]:
    """What an agent type says about itself: its capability phrases, then its examples."""
    return [*spec.capabilities, *spec.examples]


def _identity(text: str) -> str:
    return text


class ExampleIndex:
    """Labelled example texts in a FAISS `IndexFlatIP`, searched by nearest neighbours.

    `embedder` encodes texts given to `add` without vectors; `dimension` defaults to its own.
    """

    def __init__(self, embedder: Embedder | None = None, dimension: int | None = None) -> None:
        if dimension is None:
            if embedder is None:
                raise ValueError("an ExampleIndex needs an embedder or a dimension")
            dimension = embedder.dimension
        self.embedder = embedder
        self.dimension = int(dimension)
        self._examples: list[Example] = []
        self._vectors = np.zeros((0, self.dimension), dtype=np.float32)
        self._faiss = self._new_faiss_index()
        self._lock = threading.RLock()

    @classmethod
    def from_agent_types(cls, agent_types: Mapping[str, AgentSpec], embedder: Embedder,
                         prepare: Callable[[str], str] = _identity) -> ExampleIndex:
        """An index of every type's declared capabilities and examples, encoded in one call.

        `prepare` maps each text to what is embedded (the index still reports the original)."""
        index = cls(embedder)
        texts = {name: declared_texts(spec) for name, spec in agent_types.items()}
        vectors = embedder.encode([prepare(text) for group in texts.values() for text in group])
        start = 0
        for name, group in texts.items():
            index.add(group, name, "declared", vectors=vectors[start:start + len(group)])
            start += len(group)
        return index

    def __len__(self) -> int:
        return len(self._examples)

    @property
    def types(self) -> frozenset[str]:
        """The agent types that have at least one example."""
        with self._lock:
            return frozenset(example.agent_type for example in self._examples)

    def examples(self, agent_type: str | None = None) -> list[Example]:
        """Every example, in insertion order; only `agent_type`'s if given."""
        with self._lock:
            return [example for example in self._examples
                    if agent_type is None or example.agent_type == agent_type]

    def add(self, texts: Sequence[str], agent_type: str, source: str = "declared",
            vectors: np.ndarray | None = None, keys: Sequence[int] | None = None) -> int:
        """Add `texts` as examples of `agent_type`; return how many were added.

        `vectors`, one unit row per text, spares encoding them (for texts prepared for routing);
        `keys`, one per text, are the ids of stored examples (see `remove_keys`)."""
        if isinstance(texts, str):
            raise TypeError("add takes a sequence of texts, not one string")
        if source not in SOURCES:
            raise InvalidRequest(f"example source {source!r} must be one of {', '.join(SOURCES)}",
                                 {"source": source, "sources": list(SOURCES)})
        if not agent_type:
            raise InvalidRequest("an example needs an agent type")
        if not texts:
            return 0
        if keys is not None and len(keys) != len(texts):
            raise ValueError("give one key per text")
        if vectors is None:
            if self.embedder is None:
                raise ValueError("this index has no embedder: pass the vectors of the texts")
            vectors = self.embedder.encode(list(texts))
        example_keys: list[int | None] = list(keys) if keys is not None else [None] * len(texts)
        return self.add_examples([Example(text, agent_type, source, key)
                                  for text, key in zip(texts, example_keys)], vectors)

    def add_examples(self, examples: Sequence[Example], vectors: np.ndarray) -> int:
        """Add `examples` (of any types and sources) with their unit `vectors`, one row each,
        in one step; return how many were added."""
        for example in examples:
            if example.source not in SOURCES:
                raise InvalidRequest(f"example source {example.source!r} must be one of "
                                     f"{', '.join(SOURCES)}",
                                     {"source": example.source, "sources": list(SOURCES)})
            if not example.agent_type:
                raise InvalidRequest("an example needs an agent type")
        if not examples:
            return 0
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(examples), self.dimension):
            raise ValueError(f"expected vectors of shape {(len(examples), self.dimension)}, "
                             f"got {vectors.shape}")
        with self._lock:
            self._faiss.add(vectors)
            self._vectors = np.vstack([self._vectors, vectors])
            self._examples.extend(examples)
        return len(examples)

    def remove_type(self, agent_type: str, sources: Collection[str] = SOURCES) -> int:
        """Drop the examples of `agent_type` (only those from `sources`, by default all);
        return how many were dropped."""
        return self._remove(lambda e: e.agent_type == agent_type and e.source in sources)

    def remove_keys(self, keys: Collection[int]) -> int:
        """Drop the stored examples with these keys; return how many were dropped."""
        wanted = set(keys)
        return self._remove(lambda e: e.key is not None and e.key in wanted)

    def _remove(self, doomed: Callable[[Example], bool]) -> int:
        with self._lock:
            keep = [i for i, example in enumerate(self._examples) if not doomed(example)]
            removed = len(self._examples) - len(keep)
            if removed:
                self._examples = [self._examples[i] for i in keep]
                self._vectors = np.ascontiguousarray(self._vectors[keep])
                self._faiss = self._new_faiss_index()
                if keep:
                    self._faiss.add(self._vectors)
            return removed

    def near(self, vector: np.ndarray, min_similarity: float) -> list[tuple[Example, float]]:
        """Every example at least `min_similarity` from `vector`, most similar first."""
        with self._lock:
            similarities = self._vectors @ np.asarray(vector, dtype=np.float32).ravel()
            rows = np.flatnonzero(similarities >= min_similarity)
            found = [(self._examples[i], float(similarities[i])) for i in rows]
        return sorted(found, key=lambda pair: pair[1], reverse=True)

    def search(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        """The `k` nearest examples of each query row, most similar first."""
        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        with self._lock:
            k = min(k, len(self._examples))
            if k < 1:
                return [[] for _ in range(len(queries))]
            similarities, positions = self._faiss.search(queries, k)
            examples = self._examples
        return [[Neighbour(examples[p].text, examples[p].agent_type, float(s), examples[p].source)
                 for s, p in zip(row_similarities, row_positions) if p >= 0]
                for row_similarities, row_positions in zip(similarities, positions)]

    def nearest_of_type(self, vector: np.ndarray, agent_type: str) -> Neighbour | None:
        """The example of `agent_type` most similar to `vector`, or None if it has none."""
        with self._lock:
            rows = [i for i, example in enumerate(self._examples)
                    if example.agent_type == agent_type]
            if not rows:
                return None
            similarities = self._vectors[rows] @ np.asarray(vector, dtype=np.float32).ravel()
            best = int(np.argmax(similarities))
            example = self._examples[rows[best]]
        return Neighbour(example.text, example.agent_type, float(similarities[best]),
                         example.source)

    def _new_faiss_index(self) -> Any:
        import faiss

        return faiss.IndexFlatIP(self.dimension)
