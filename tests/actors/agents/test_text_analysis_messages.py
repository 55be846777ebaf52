"""A message to the text_analysis inbox becomes an analysis: the body is the text, the subject
says which analysis, and a message that says none is refused with the choices."""

from __future__ import annotations

from typing import Any

import pytest

from actors.agents.text_analysis import OPERATIONS, TextAnalysis, analyse
from actors.errors import InvalidTaskInput
from storage.messages import InboxMessage, utcnow


def message(body: Any, subject: str | None = None, sender: str | None = None) -> InboxMessage:
    return InboxMessage(id="m" * 32, recipient="text_analysis", body=body, created_at=utcnow(),
                        subject=subject, sender=sender)


def no_embedder() -> Any:
    raise AssertionError("this analysis needs no embeddings")


def test_text_analysis_starts_work_from_its_inbox() -> None:
    assert TextAnalysis.spec.on_message == "task"


def test_a_text_with_a_subject_is_analysed_as_the_subject_says() -> None:
    review = "The staff were wonderful and the food was excellent."

    mapped = TextAnalysis.message_task(message(review, subject="Sentiment of this review"))

    assert mapped == {"description": "Sentiment of this review",
                      "payload": {"text": review, "operation": "sentiment"}}
    result = analyse(mapped["payload"], mapped["description"], no_embedder)
    assert result["operation"] == "sentiment" and result["label"] == "positive"


def test_the_body_is_the_text_even_when_the_subject_has_a_colon() -> None:
    mapped = TextAnalysis.message_task(
        message("One. Two words. Three words here.", subject="Statistics: weekly notes"))

    assert mapped is not None
    result = analyse(mapped["payload"], mapped["description"], no_embedder)
    assert result["operation"] == "statistics" and result["sentences"] == 3


def test_a_list_body_is_the_texts_and_an_object_body_the_payload() -> None:
    listed = TextAnalysis.message_task(message(["good", "bad"], subject="sentiment please"))
    assert listed is not None and listed["payload"] == {"texts": ["good", "bad"],
                                                        "operation": "sentiment"}
    named = TextAnalysis.message_task(
        message({"text": "plain words here", "operation": "keywords", "k": 2}, sender="bot"))
    assert named == {"description": "keywords of a message from bot",
                     "payload": {"text": "plain words here", "operation": "keywords", "k": 2}}


def test_an_envelope_reads_as_for_any_agent() -> None:
    body = {"description": "keywords of the notes", "payload": {"text": "notes", "k": 1}}
    assert TextAnalysis.message_task(message(body)) == {
        "description": "keywords of the notes", "payload": {"text": "notes", "k": 1}}


@pytest.mark.parametrize(("body", "subject", "expected"), [
    ("just some text", None, "cannot tell which analysis to run"),
    ("just some text", "hello there", "cannot tell which analysis to run"),
    ({"text": "t", "operation": "translate"}, None, "unknown operation"),
    (42, "sentiment", "not a number"),
])
def test_a_message_that_names_no_analysis_is_refused_with_the_choices(
    body: Any, subject: str | None, expected: str,
) -> None:
    with pytest.raises(InvalidTaskInput, match=expected) as raised:
        TextAnalysis.message_task(message(body, subject=subject))
    if "analysis" in expected:
        assert raised.value.details["accepted"] == list(OPERATIONS)
