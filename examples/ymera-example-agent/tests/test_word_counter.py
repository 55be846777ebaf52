"""The word_counter agent, called the way a replica calls it: `run` with an `AgentTask`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from actors.sdk import Agent, AgentTask, InvalidTaskInput
from ymera_example_agent import WordCounter
from ymera_example_agent.word_counter import INLINE_CHARS, MAX_TOP_N


def count(payload: dict[str, Any], description: str = "count the words") -> dict[str, Any]:
    task = AgentTask(task_id="t", attempt=1, agent_type="word_counter", description=description,
                     payload=payload, timeout_s=10)
    result = asyncio.run(WordCounter().run(task))
    json.dumps(result, allow_nan=False)  # a result must be plain JSON
    return result


def refusal(payload: dict[str, Any]) -> InvalidTaskInput:
    with pytest.raises(InvalidTaskInput) as caught:
        count(payload)
    return caught.value


def test_spec_is_what_the_platform_and_router_read():
    spec = WordCounter.spec
    assert issubclass(WordCounter, Agent) and spec.name == "word_counter"
    assert spec.description and len(spec.capabilities) >= 6
    assert len(set(spec.examples)) == len(spec.examples) >= 15


def test_counts_words_characters_and_lines():
    result = count({"text": "The cat and the hat.\nThe end"})

    assert result == {
        "words": 7, "unique_words": 5, "characters": 28, "characters_without_spaces": 22,
        "lines": 2,
        "top_words": [{"word": "the", "count": 3}, {"word": "and", "count": 1},
                      {"word": "cat", "count": 1}, {"word": "end", "count": 1},
                      {"word": "hat", "count": 1}],
    }


def test_top_n_limits_the_list_and_ties_are_alphabetical():
    result = count({"text": "b a c b a c d", "top_n": 2})
    assert result["top_words"] == [{"word": "a", "count": 2}, {"word": "b", "count": 2}]
    assert count({"text": "b a", "top_n": 0})["top_words"] == []


def test_words_keep_inner_apostrophes_and_hyphens_and_ignore_case():
    result = count({"text": "Don't stop — a well-known café, DON'T! 42 times_two"})

    assert result["words"] == 9
    assert result["top_words"][0] == {"word": "don't", "count": 2}
    assert {"well-known", "café", "42", "times", "two"} <= {
        entry["word"] for entry in result["top_words"]}


def test_empty_text_counts_nothing():
    assert count({"text": ""}) == {"words": 0, "unique_words": 0, "characters": 0,
                                   "characters_without_spaces": 0, "lines": 0, "top_words": []}


def test_a_long_text_is_counted_off_the_event_loop_with_the_same_result():
    text = "alpha beta beta " * (INLINE_CHARS // 10)
    result = count({"text": text, "top_n": 1})
    assert result["words"] == 3 * (INLINE_CHARS // 10)
    assert result["top_words"] == [{"word": "beta", "count": 2 * (INLINE_CHARS // 10)}]


def test_missing_or_non_string_text_is_refused_naming_the_field():
    error = refusal({})
    assert "needs 'text'" in error.message and error.details == {"field": "text"}
    for text, kind in ((None, "null"), (42, "a number"), (["a"], "a list"), ({}, "an object")):
        error = refusal({"text": text})
        assert error.message == f"payload 'text' must be a string, got {kind}"
    assert InvalidTaskInput.retryable is False  # the platform fails such a task at once


@pytest.mark.parametrize("top_n", [-1, MAX_TOP_N + 1, 2.5, "3", True, None])
def test_a_bad_top_n_is_refused(top_n: Any):
    error = refusal({"text": "a b", "top_n": top_n})
    assert "'top_n'" in error.message and error.details["field"] == "top_n"
