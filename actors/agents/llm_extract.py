"""The `extract` loop of the `llm` agent: structured output that must match a JSON Schema.

`extract_json` asks a language model (through `complete(messages) -> str`) for the JSON value
the text holds, in the shape a JSON Schema describes, and checks the answer with the validation
agent's own engine (`actors.agents.validation.validate_schema`: the draft the schema names,
formats asserted, every pattern on RE2). Guarantees:

- The schema is checked before any model call: one that is not a valid schema of its draft, or
  whose patterns RE2 cannot run, is `InvalidTaskInput` naming it, and the model is never asked.
- An answer is accepted only when it is JSON (alone, or in one ```json fence) and the engine
  finds no error in it; the value returned is exactly that JSON.
- A refused answer is sent back with its problem (the parse error, or the schema errors with
  their JSON-pointer paths, at most `MAX_FED_BACK_ERRORS` of them) and the model is asked again,
  at most `max_attempts` calls in all. The retry carries the previous answer and its problem,
  nothing older. When every attempt is refused, `InvalidTaskInput` names the last problem and
  lists every attempt's in its details (not retried by the platform: another attempt would pay
  for the same calls again).
- The model's own errors (`ml.llm.types.LlmError`) pass through unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from actors.agents.validation import validate_schema
from actors.errors import InvalidTaskInput
from ml.llm.types import Message

CompleteText = Callable[[Sequence[Message]], Awaitable[str]]
"""A model call: the conversation in, the answer's text out."""

DEFAULT_MAX_ATTEMPTS = 3
MAX_FED_BACK_ERRORS = 20
MAX_ECHOED_ANSWER_CHARS = 20_000

_FENCE = re.compile(r"\A```(?:json|JSON)?[ \t]*\n(?P<body>.*)\n[ \t]*```\Z", re.DOTALL)

_SYSTEM = """You extract information from the user's text into JSON. Answer with one JSON value \
that matches this JSON Schema, and nothing else: no prose, no comments. Use only what the text \
says; where the schema allows null and the text says nothing, use null.

JSON Schema:
{schema}"""


@dataclass(frozen=True)
class Extraction:
    """An accepted answer: the JSON `value`, how many model calls it took, and the problems of
    the refused answers before it."""

    value: Any
    attempts: int
    problems: tuple[str, ...] = ()


class _Refused(Exception):
    def __init__(self, problem: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(problem, errors)
        self.problem = problem
        self.errors = errors or []


async def extract_json(text: str, schema: Any, complete: CompleteText, *,
                       max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                       instructions: str | None = None) -> Extraction:
    """The JSON value `text` holds, matching `schema`; see the module docstring.

    `instructions` (optional) are added to the request, like "dates as YYYY-MM-DD"."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidTaskInput("extract needs payload 'text': the text to extract from",
                               {"field": "text"})
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidTaskInput(f"payload 'max_attempts' must be a whole number of at least 1, "
                               f"got {max_attempts!r}", {"field": "max_attempts"})
    check_schema(schema)
    request = text if not instructions else f"{instructions.strip()}\n\nText:\n{text}"
    opening = [Message("system", _SYSTEM.format(schema=json.dumps(schema, indent=1))),
               Message("user", request)]
    messages = list(opening)
    problems: list[str] = []
    last_errors: list[dict[str, Any]] = []
    for attempt in range(1, max_attempts + 1):
        answer = await complete(messages)
        try:
            value = _accepted(answer, schema)
        except _Refused as refused:
            problems.append(refused.problem)
            last_errors = refused.errors
            messages = [*opening, Message("assistant", _clip(answer)),
                        Message("user", f"That answer was refused: {refused.problem}\n"
                                        "Answer again with the corrected JSON alone.")]
            continue
        return Extraction(value, attempt, tuple(problems))
    raise InvalidTaskInput(
        f"the model gave no answer matching the schema in {max_attempts} attempt(s); the last "
        f"was refused: {problems[-1]}",
        {"field": "schema", "attempts": max_attempts, "problems": problems,
         "errors": last_errors})


def check_schema(schema: Any) -> None:
    """Refuse (`InvalidTaskInput`, naming where) a schema the validation agent could not use."""
    validate_schema({"schema": schema, "document": None, "max_errors": 0})


def _accepted(answer: str, schema: Any) -> Any:
    value = _parsed(answer)
    verdict = validate_schema({"schema": schema, "document": value,
                               "max_errors": MAX_FED_BACK_ERRORS})
    if verdict["valid"]:
        return value
    errors = [{"path": error["path"], "message": error["message"]} for error in verdict["errors"]]
    listed = "; ".join(f"at {error['path'] or 'the root'}: {error['message']}"
                       for error in errors)
    more = verdict["error_count"] - len(errors)
    count = verdict["error_count"]
    raise _Refused(f"it does not match the schema ({count} error{'s' if count != 1 else ''}): "
                   f"{listed}" + (f"; and {more} more" if more > 0 else ""), errors)


def _parsed(answer: str) -> Any:
    text = answer.strip() if isinstance(answer, str) else ""
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group("body").strip()
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise _Refused(f"it is not JSON alone ({exc.msg} at line {exc.lineno} column "
                       f"{exc.colno}); answer with the JSON value and nothing else") from exc
    except (ValueError, RecursionError) as exc:
        raise _Refused(f"it is not plain JSON ({exc or 'nested too deeply'}); answer with "
                       "the JSON value and nothing else") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _clip(answer: str) -> str:
    if len(answer) <= MAX_ECHOED_ANSWER_CHARS:
        return answer
    return answer[:MAX_ECHOED_ANSWER_CHARS] + "\n[... cut]"
