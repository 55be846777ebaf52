"""The `extract` loop: scripted model answers checked by the validation agent's schema engine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from actors.agents.llm_extract import MAX_FED_BACK_ERRORS, Extraction, extract_json
from actors.agents.validation import Validation
from actors.errors import InvalidTaskInput
from ml.llm.types import Message, ProviderTimeout
from storage.messages import AgentTask

INVOICE = {
    "type": "object",
    "properties": {
        "number": {"type": "string", "pattern": "^INV-[0-9]{4}$"},
        "total": {"type": "number", "minimum": 0},
        "due": {"type": "string", "format": "date"},
        "email": {"type": ["string", "null"], "format": "email"},
    },
    "required": ["number", "total", "due"],
    "additionalProperties": False,
}
TEXT = "Invoice INV-0042 for 120.50 EUR is due on 2026-01-31. Questions: billing@example.com"
GOOD = {"number": "INV-0042", "total": 120.5, "due": "2026-01-31", "email": "billing@example.com"}
WRONG = {"number": "42", "total": -1, "due": "31/01/2026", "extra": True}


class ScriptedModel:
    """Answers with the scripted texts in order, recording every conversation it was given."""

    def __init__(self, *answers: Any) -> None:
        self.answers = [a if isinstance(a, str) else json.dumps(a) for a in answers]
        self.calls: list[list[Message]] = []

    async def __call__(self, messages: Sequence[Message]) -> str:
        self.calls.append(list(messages))
        if len(self.calls) > len(self.answers):
            raise AssertionError("the loop asked more often than scripted")
        return self.answers[len(self.calls) - 1]


async def test_a_valid_answer_is_returned_at_the_first_attempt():
    model = ScriptedModel("```json\n" + json.dumps(GOOD) + "\n```")
    extraction = await extract_json(TEXT, INVOICE, model)
    assert extraction == Extraction(GOOD, 1, ())
    [conversation] = model.calls
    assert [m.role for m in conversation] == ["system", "user"]
    assert json.dumps(INVOICE, indent=1) in conversation[0].content
    assert conversation[1].content == TEXT


async def test_schema_errors_are_fed_back_and_the_corrected_answer_accepted():
    model = ScriptedModel(WRONG, GOOD)
    extraction = await extract_json(TEXT, INVOICE, model)
    assert (extraction.value, extraction.attempts) == (GOOD, 2)
    [problem] = extraction.problems
    # Each error of the validation agent's engine, with its path: pattern (on RE2), minimum,
    # format, additionalProperties.
    for expected in ("at /number: '42' does not match '^INV-[0-9]{4}$'",
                     "at /total: -1 is less than the minimum of 0",
                     "at /due: '31/01/2026' is not a 'date'",
                     "Additional properties are not allowed ('extra' was unexpected)",
                     "4 errors"):
        assert expected in problem
    retry = model.calls[1]
    assert [m.role for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[2].content == json.dumps(WRONG)
    assert problem in retry[3].content


async def test_an_answer_that_is_not_json_is_fed_back():
    model = ScriptedModel("Sure! The invoice number is INV-0042.", GOOD)
    extraction = await extract_json(TEXT, INVOICE, model)
    assert extraction.attempts == 2
    assert "not JSON alone" in extraction.problems[0]
    assert extraction.problems[0] in model.calls[1][3].content


async def test_never_valid_is_invalid_task_input_naming_the_schema_errors():
    model = ScriptedModel(WRONG, {"number": "INV-1"}, {"number": "INV-0001", "total": "12"})
    with pytest.raises(InvalidTaskInput) as refused:
        await extract_json(TEXT, INVOICE, model)
    assert len(model.calls) == 3
    error = refused.value
    assert error.retryable is False
    assert "in 3 attempt(s)" in error.message
    assert "at /total: '12' is not of type 'number'" in error.message
    assert "'due' is a required property" in error.message
    assert len(error.details["problems"]) == 3
    assert {e["path"] for e in error.details["errors"]} == {"", "/total"}
    json.dumps(error.details)  # recordable on the task as it is


async def test_max_attempts_bounds_the_calls_and_fed_back_errors_are_bounded():
    many = {"type": "array", "items": {"type": "integer"}}
    model = ScriptedModel(["x"] * 50)
    with pytest.raises(InvalidTaskInput) as refused:
        await extract_json("fifty numbers", many, model, max_attempts=1)
    assert len(model.calls) == 1
    assert len(refused.value.details["errors"]) == MAX_FED_BACK_ERRORS
    assert f"and {50 - MAX_FED_BACK_ERRORS} more" in refused.value.message


@pytest.mark.parametrize(("schema", "expected"), [
    ({"type": "objekt"}, "is not a valid 2020-12 JSON Schema"),
    ({"type": "string", "pattern": "^(a)\\1$"}, "schema.pattern"),
    ({"$schema": "https://example.com/my-draft"}, "names no draft"),
    ("not a schema", "must be a JSON Schema"),
])
async def test_a_bad_schema_is_refused_without_calling_the_model(schema: Any, expected: str):
    model = ScriptedModel(GOOD)
    with pytest.raises(InvalidTaskInput) as refused:
        await extract_json(TEXT, schema, model)
    assert expected in refused.value.message
    assert refused.value.details["field"].startswith("schema")
    assert model.calls == []


async def test_the_validation_agent_gives_the_same_verdict_on_what_extract_accepts():
    # The same engine: what extract accepted, the validation agent finds valid, and the
    # answer it refused, the agent finds invalid with the same number of errors.
    extraction = await extract_json(TEXT, INVOICE, ScriptedModel(WRONG, GOOD))
    agent = Validation()

    async def verdict(document: Any) -> Any:
        task = AgentTask("t", 1, "validation", "validate", {"schema": INVOICE,
                                                           "document": document}, 10.0)
        return await agent.run(task)

    assert (await verdict(extraction.value))["valid"] is True
    assert (await verdict(WRONG))["error_count"] == 4


@pytest.mark.parametrize(("text", "attempts", "field"), [("  ", 3, "text"),
                                                         (TEXT, 0, "max_attempts")])
async def test_bad_arguments_are_refused_before_the_model_is_asked(text: str, attempts: int,
                                                                   field: str):
    model = ScriptedModel(GOOD)
    with pytest.raises(InvalidTaskInput) as refused:
        await extract_json(text, INVOICE, model, max_attempts=attempts)
    assert refused.value.details["field"] == field
    assert model.calls == []


async def test_a_model_error_passes_through_unchanged():
    async def slow(messages: Sequence[Message]) -> str:
        raise ProviderTimeout("no answer in 30 s", "main")

    with pytest.raises(ProviderTimeout):
        await extract_json(TEXT, INVOICE, slow)


async def test_instructions_reach_the_model_with_the_text():
    model = ScriptedModel(GOOD)
    await extract_json(TEXT, INVOICE, model, instructions="Dates as YYYY-MM-DD.")
    assert model.calls[0][1].content == f"Dates as YYYY-MM-DD.\n\nText:\n{TEXT}"


async def test_non_json_numbers_are_refused():
    model = ScriptedModel('{"number": "INV-0042", "total": NaN, "due": "2026-01-31"}', GOOD)
    extraction = await extract_json(TEXT, INVOICE, model)
    assert extraction.attempts == 2 and "NaN is not a JSON number" in extraction.problems[0]
