"""Word overlap between a task and the router's examples: a TF-IDF cosine that complements the
sentence embeddings.

The embeddings weigh what a task is about (orders, patients, sensors) about as much as what it
asks for, so a task can land near an example of the wrong agent type that merely shares its
subject. Shared words that are rare among the examples ("validate", "webhook", "cluster",
"readability") are strong evidence of the operation asked for, so the router adds
`lexical_weight` times this score to each candidate example's cosine similarity before voting.

`LexicalScorer` fixes its vocabulary and inverse document frequencies on the texts it is built
from (the declared examples and the out-of-scope phrases); words outside it are ignored. Its
weights follow the usual smoothed, sublinear TF-IDF: idf = ln((1 + n) / (1 + df)) + 1, tf = 1 +
ln(count), each text's vector of unit length. Pure Python; immutable once built, so safe to share
between threads.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable

WORD = re.compile(r"\b\w\w+\b")
REMEMBERED = 100_000


def words(text: str) -> list[str]:
    """The words of `text` that are scored: lower-cased, two characters or more."""
    return WORD.findall(text.lower())


def _identity(text: str) -> str:
    return text


class LexicalScorer:
    """TF-IDF cosine similarity between texts, with the vocabulary of `corpus`. `prepare` maps
    each text to what is scored, as the router maps texts to what is embedded."""

    def __init__(self, corpus: Iterable[str], prepare: Callable[[str], str] = _identity) -> None:
        self.prepare = prepare
        documents = [set(words(prepare(text))) for text in corpus]
        frequency = Counter(word for document in documents for word in document)
        n = len(documents)
        self.idf = {word: math.log((1 + n) / (1 + df)) + 1 for word, df in frequency.items()}
        self._examples: dict[str, dict[str, float]] = {}

    def vector(self, text: str) -> dict[str, float]:
        """The unit TF-IDF vector of `text` over the vocabulary (empty when no word is known)."""
        return self.prepared_vector(self.prepare(text))

    def prepared_vector(self, prepared: str) -> dict[str, float]:
        """`vector` of a text already mapped by `prepare`."""
        counts = Counter(word for word in words(prepared) if word in self.idf)
        weights = {word: (1 + math.log(count)) * self.idf[word] for word, count in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {word: w / norm for word, w in weights.items()} if norm else {}

    def similarity(self, query: dict[str, float], example: str) -> float:
        """The cosine between a query's `vector` and an example text's, in [0, 1]. Example
        vectors are remembered (examples recur in every search; queries rarely do)."""
        other = self._examples.get(example)
        if other is None:
            other = self.vector(example)
            if len(self._examples) < REMEMBERED:
                self._examples[example] = other
        return sum(query[word] * other[word] for word in query.keys() & other.keys())
