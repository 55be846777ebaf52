"""Extractive answers with citations from a collection, or "not found in the collection".

`extractive_answer` searches the collection (hybrid, `CollectionIndex.search`), splits the best
chunks into sentences, and answers with the sentences most similar to the question, each
followed by `[n]`, where citation n names the chunk it came from (document, chunk id, exact
offsets of the sentence in the document's text).

Guarantees:
- Every sentence of an answer is copied verbatim from a cited chunk, and every citation is used
  by at least one sentence: nothing in an answer is unsupported.
- When the nearest chunk's cosine similarity to the question is below `min_similarity`, or no
  sentence qualifies, the answer is `NOT_FOUND` with no citations and `found` False.
- Deterministic for the same collection, question and encoder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.knowledge.lexical import terms
from ml.knowledge.search import CollectionIndex, SearchHit

NOT_FOUND = "not found in the collection"
DEFAULT_MIN_SIMILARITY = 0.22
DEFAULT_MAX_SENTENCES = 3
DEFAULT_SOURCE_CHUNKS = 3
MIN_SENTENCE_WORDS = 4
LEXICAL_WEIGHT = 0.15
_BOUNDARY = re.compile(r"[.!?]+(?=\s)|\n")

Encode = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Citation:
    """Citation `number` ([n] in the answer): a chunk and the document it comes from."""

    number: int
    chunk_id: int
    document_id: str
    document_name: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class AnswerSentence:
    """One sentence of an answer, its citation number and its offsets in the document."""

    text: str
    citation: int
    start: int
    end: int


@dataclass(frozen=True)
class Answer:
    """An answer: `text` with [n] markers, its sentences and citations, whether the
    collection answered (`found`), and the nearest chunk's similarity (`confidence`)."""

    text: str
    found: bool
    confidence: float
    sentences: list[AnswerSentence]
    citations: list[Citation]
    hits: list[SearchHit]


def sentences_of(text: str) -> list[tuple[int, int]]:
    """The [start, end) spans of the sentences of `text` (split at . ! ? before a space, and at
    line ends), whitespace trimmed, empty spans dropped."""
    raw: list[tuple[int, int]] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        raw.append((start, match.start() if match.group() == "\n" else match.end()))
        start = match.end()
    raw.append((start, len(text)))
    spans = []
    for start, end in raw:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def _answerable(sentence: str) -> bool:
    stripped = sentence.lstrip("#>*-• \t")
    return len(stripped.split()) >= MIN_SENTENCE_WORDS and not sentence.startswith("#")


def extractive_answer(collection: CollectionIndex, question: str, encode: Encode, *,
                      where: Mapping[str, Any] | None = None,
                      min_similarity: float = DEFAULT_MIN_SIMILARITY,
                      max_sentences: int = DEFAULT_MAX_SENTENCES,
                      source_chunks: int = DEFAULT_SOURCE_CHUNKS) -> Answer:
    """Answer `question` from `collection` with cited sentences; see the module."""
    query = np.asarray(encode([question]), dtype=np.float32)[0]
    confidence = collection.best_similarity(query, where)
    hits = collection.search(query, question, k=source_chunks, where=where)
    if confidence < min_similarity or not hits:
        return Answer(NOT_FOUND, False, confidence, [], [], hits)
    candidates: list[tuple[int, int, int, str]] = []
    seen: set[str] = set()
    for rank, hit in enumerate(hits):
        for start, end in sentences_of(hit.text):
            sentence = hit.text[start:end]
            key = " ".join(sentence.lower().split())
            if _answerable(sentence) and key not in seen:
                seen.add(key)
                candidates.append((rank, start, end, sentence))
    if not candidates:
        return Answer(NOT_FOUND, False, confidence, [], [], hits)
    vectors = np.asarray(encode([c[3] for c in candidates]), dtype=np.float32)
    question_terms = set(terms(question))
    scores = []
    for (rank, _, _, sentence), vector in zip(candidates, vectors):
        overlap = len(question_terms & set(terms(sentence))) / max(1, len(question_terms))
        scores.append(float(vector @ query) + LEXICAL_WEIGHT * overlap - 0.02 * rank)
    best = max(scores)
    chosen = sorted((index for index in np.argsort(-np.asarray(scores), kind="stable")
                     [:max_sentences] if scores[index] >= best - 0.15),
                    key=lambda index: (candidates[index][0], candidates[index][1]))
    citations: dict[int, Citation] = {}
    sentences: list[AnswerSentence] = []
    for index in chosen:
        rank, start, end, sentence = candidates[index]
        hit = hits[rank]
        if rank not in citations:
            citations[rank] = Citation(len(citations) + 1, hit.chunk_id, hit.document_id,
                                       hit.document_name, hit.start, hit.end, hit.text)
        sentences.append(AnswerSentence(sentence, citations[rank].number, hit.start + start,
                                        hit.start + end))
    text = " ".join(f"{s.text} [{s.citation}]" for s in sentences)
    return Answer(text, True, confidence, sentences, list(citations.values()), hits)
