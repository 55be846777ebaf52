"""The `word_counter` agent: counts the words, characters and lines of a text, and its most
frequent words.

    {"text": "the cat and the hat"}               → {"words": 5, "unique_words": 4, ...,
                                                     "top_words": [{"word": "the", "count": 2}, ...]}
    {"text": "...", "top_n": 3}                   → at most 3 entries in "top_words" (0 for none)

A word is a run of letters or digits, with inner apostrophes or hyphens ("don't", "well-known");
words are counted case-insensitively. Ties in "top_words" are listed alphabetically.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

from actors.sdk import Agent, AgentSpec, AgentTask, InvalidTaskInput, Resources, json_type

DEFAULT_TOP_N = 10
MAX_TOP_N = 1000
INLINE_CHARS = 50_000  # longer texts are counted in a worker thread

WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def count_words(text: str, top_n: int = DEFAULT_TOP_N) -> dict[str, Any]:
    """Word, character and line counts of `text`, and its `top_n` most frequent words."""
    counts = Counter(word.casefold() for word in WORD.findall(text))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_n]
    return {
        "words": sum(counts.values()),
        "unique_words": len(counts),
        "characters": len(text),
        "characters_without_spaces": sum(1 for char in text if not char.isspace()),
        "lines": len(text.splitlines()),
        "top_words": [{"word": word, "count": count} for word, count in ranked],
    }


def _text(payload: dict[str, Any]) -> str:
    if "text" not in payload:
        raise InvalidTaskInput("payload needs 'text': the text to count", {"field": "text"})
    text = payload["text"]
    if not isinstance(text, str):
        raise InvalidTaskInput(f"payload 'text' must be a string, got {json_type(text)}",
                               {"field": "text"})
    return text


def _top_n(payload: dict[str, Any]) -> int:
    top_n = payload.get("top_n", DEFAULT_TOP_N)
    if isinstance(top_n, bool) or not isinstance(top_n, int) or not 0 <= top_n <= MAX_TOP_N:
        raise InvalidTaskInput(
            f"payload 'top_n' must be a whole number from 0 to {MAX_TOP_N}, got "
            f"{top_n if isinstance(top_n, (int, float)) else json_type(top_n)}",
            {"field": "top_n", "max": MAX_TOP_N})
    return top_n


class WordCounter(Agent):
    """Counts words, characters and lines of the text in payload "text"."""

    spec = AgentSpec(
        name="word_counter",
        description="Counts the words, unique words, characters and lines of a text and lists "
        "its most frequent words.",
        capabilities=(
            "count the words in a text",
            "count the characters of a text, with and without spaces",
            "count the lines of a text",
            "count the distinct words of a text",
            "list the most frequent words of a text",
            "measure the length of a document",
        ),
        examples=(
            "count the words in this text",
            "how many words are in this paragraph?",
            "word count of my essay",
            "how many characters does this message have?",
            "count characters without spaces",
            "how many lines are in this poem?",
            "what are the most common words in this article?",
            "top 5 most frequent words",
            "which word appears most often?",
            "how many distinct words does this text use?",
            "how long is this document in words?",
            "give me word frequencies for this review",
            "is this abstract under 250 words?",
            "count the unique words in these lyrics",
            "how many times does each word occur?",
            "tell me the length of this tweet in characters",
        ),
        resources=Resources(num_cpus=0.1),
        concurrency=8,
        replicas=1,
    )

    async def run(self, task: AgentTask) -> dict[str, Any]:
        text, top_n = _text(task.payload), _top_n(task.payload)
        if len(text) <= INLINE_CHARS:
            return count_words(text, top_n)
        # Long texts would hold the replica's event loop (and its health check) for a while.
        return await asyncio.to_thread(count_words, text, top_n)
