"""The `llm` agent: open-ended language work through the platform's model gateway.

Registered only when a model is configured (`OrchestratorConfig.llm`). Payload (every field
optional; an unknown field is refused, naming it):

    {"operation": "chat" | "complete" | "summarize" | "translate" | "classify" | "extract",
     "prompt" | "messages" | "text", "system", "target_language", "labels", "schema",
     "instructions", "max_attempts", "model", "max_tokens", "temperature", "cache_ttl_s",
     "stream"}

- With no `prompt`, `messages` or `text`, the task's description is the input, so a routed
  "translate 'good morning' into French" works with an empty payload.
- `chat`/`complete` answer the prompt (or continue `messages`); `summarize` and `translate`
  (`target_language` required) answer with the summary or translation alone; `classify`
  answers with exactly one of `labels` (2 to 100 distinct strings), asking again with the
  reason when the model's answer is none of them, at most `max_attempts` calls; `extract`
  answers with JSON matching `schema` (`actors.agents.llm_extract`).
- The result: `{"text"}` (or `{"label"}`, `{"data"}`) with `model`, `deployment`, `usage`
  (tokens summed over the calls), `cost_usd`, `cached` and `calls`. Usage and cost are also
  recorded on the task by the gateway.
- With `"stream": true` (text operations), the answer's text goes out as it is written, as
  "output_delta" task events (`actors.agents.llm_stream`). A stream that breaks after it
  started emits an "output_error" event and fails the attempt with `RetryableAgentError`: the
  platform retries it, and the retry streams again from the start, with the new attempt number
  on its events (readers keep the events of the attempt that succeeded). Where the agent has
  no `events` port (outside a platform), the answer is streamed and returned without events.

Errors: bad input is `InvalidTaskInput` naming the field. A model that cannot answer now (no
deployment answered, rate limited, timed out, the gateway restarting) is `RetryableAgentError`;
a spent token budget or a request the model refuses is `InvalidTaskInput` (another attempt
would be refused the same way).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from actors.agent import Agent, LanguageModels, TaskOutput, invalid, json_type
from actors.agents.llm_extract import check_schema, extract_json
from actors.agents.llm_stream import StreamFailed, stream_answer
from actors.errors import InvalidTaskInput, RetryableAgentError
from ml.llm.settings import NO_MODEL_HINT
from ml.llm.types import ROLES, BadModelRequest, BudgetExceeded, LlmError, Message
from storage.errors import InvalidRequest
from storage.messages import AgentSpec, AgentTask, Resources

OPERATIONS = ("chat", "complete", "summarize", "translate", "classify", "extract")
TEXT_OPERATIONS = ("chat", "complete", "summarize", "translate")
INPUT_FIELDS = ("prompt", "messages", "text")
FIELDS = frozenset({"operation", *INPUT_FIELDS, "system", "target_language", "labels",
                    "schema", "instructions", "max_attempts", "model", "max_tokens",
                    "temperature", "cache_ttl_s", "stream"})
MAX_LABELS = 100
MAX_LABEL_CHARS = 200
MAX_MESSAGES = 500
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS = 5

log = logging.getLogger("ymera.agents.llm")

SUMMARIZE = ("Summarise the text the user gives in a few sentences of plain prose, in the "
             "text's own language. Keep its facts; add nothing. Answer with the summary alone.")
TRANSLATE = ("Translate the text the user gives into {language}. Keep its meaning, tone and "
             "formatting; translate nothing else and add no notes. Answer with the translation "
             "alone.")
CLASSIFY = ("Classify the text the user gives. Answer with exactly one of these labels, "
            "written as given, and nothing else:\n{labels}")
NOT_A_LABEL = ("{answer!r} is not one of the labels. Answer again with exactly one of: "
               "{labels}")


class Llm(Agent):
    """Chat, summaries, translations, classification and JSON extraction with a language model."""

    spec = AgentSpec(
        name="llm",
        description="Open-ended language work with a large language model: translate text, "
        "write, draft and rewrite emails, replies, letters and other prose, summarise in prose, "
        "answer questions about a given text, classify text into given labels, and extract "
        "fields from text as JSON.",
        capabilities=(
            "translate text from one language into another",
            "draft or write an email, a letter or a reply to a message",
            "rewrite, rephrase or proofread text in another tone or style",
            "answer questions about a text that is given",
            "summarise a document in your own words as a short prose abstract",
            "extract named fields from free text as JSON",
            "write creative text: a poem, a short story, a slogan",
            "chat with a large language model",
        ),
        examples=(
            "translate 'good morning' into French",
            "translate this paragraph into German",
            "how do you say 'thank you' in Japanese",
            "write a polite reply to this email declining the invitation",
            "write an email to the team announcing the office move",
            "write a cover letter for this job posting",
            "rewrite this paragraph so it sounds more formal",
            "proofread this letter and fix the grammar",
            "paraphrase this sentence in simpler words",
            "turn these bullet points into a short announcement",
            "write a short poem about the sea",
            "write a short story for kids about friendship",
            "answer this question using only the contract text below",
            "according to this text, who signed the agreement?",
            "extract the invoice number, date and total from this invoice as JSON",
            "pull the name, email and phone number out of this signature as JSON",
            "write an abstract of this paper in your own words",
            "ask the language model to explain this paragraph",
            "classify these support tickets into billing, bug or feature request",
            "come up with five names for a coffee shop",
            "write a haiku about the ocean",
            "write a bedtime story for my daughter",
            "write a toast for my brother's wedding",
            "tell me a joke about programmers",
            "draft a short message wishing a colleague a happy retirement",
            "write a thank-you note to a client for their order",
            "write an apology email to a customer for the delay",
            "reply to this complaint in a warm, friendly tone",
            "make this announcement sound more enthusiastic",
            "rephrase this message so it sounds less harsh",
            "translate this menu into English",
            "brainstorm five taglines for our summer sale",
            "write a short LinkedIn post announcing our new office",
            "tag these survey answers as praise, complaint or suggestion",
            "suggest a title for my blog post about gardening",
            "based on the passage above, who is responsible for repairs?",
            "restate this legal clause in everyday words",
            "write a short note to the staff announcing the holiday closure",
            "sum up this report in one readable paragraph for executives",
            "assign each of these articles one topic: tech, health or finance",
            "mark each customer comment as enthusiastic, disappointed or mixed",
        ),
        resources=Resources(num_cpus=0.05),  # it waits on the gateway: I/O, not CPU
        concurrency=32,
        payload_hint={"operation": "translate", "text": "Good morning, everyone.",
                      "target_language": "French"},
    )

    async def run(self, task: AgentTask) -> Any:
        payload = task.payload
        unknown = sorted(set(payload) - FIELDS)
        if unknown:
            raise invalid(f"payload field {unknown[0]!r} is not one the llm agent takes; it "
                          f"takes: {', '.join(sorted(FIELDS))}", field=unknown[0])
        operation = payload.get("operation", "chat")
        if operation not in OPERATIONS:
            raise invalid(f"payload 'operation' must be one of {', '.join(OPERATIONS)}, "
                          f"not {operation!r}", field="operation")
        stream = _flag(payload, "stream")
        if stream and operation not in TEXT_OPERATIONS:
            raise invalid(f"payload 'stream' works with the text operations "
                          f"({', '.join(TEXT_OPERATIONS)}), not {operation!r}", field="stream")
        call = _Calls(self._models(), self.events, task, _options(payload))
        if operation == "classify":
            return await _classify(call, _source_text(task), _labels(payload),
                                   _attempts(payload), _optional_text(payload, "system"))
        if operation == "extract":
            return await _extract(call, _source_text(task), payload)
        messages = _messages(task, operation)
        if stream:
            return call.result("text", await call.stream(messages))
        return call.result("text", (await call.complete(messages))["text"])

    def _models(self) -> LanguageModels:
        if self.llm is None:
            raise InvalidTaskInput(f"this agent has no model gateway: {NO_MODEL_HINT}",
                                   {"field": "operation"})
        return self.llm


class _Calls:
    """The model calls of one attempt, with their usage and cost summed."""

    def __init__(self, llm: LanguageModels, events: TaskOutput | None, task: AgentTask,
                 options: dict[str, Any]) -> None:
        self.llm = llm
        self.events = events
        self.task = task
        self.options = options
        self.answers: list[dict[str, Any]] = []

    def request(self, messages: Sequence[Message]) -> dict[str, Any]:
        return {"tenant": self.task.tenant, "task_id": self.task.task_id,
                "messages": [{"role": m.role, "content": m.content} for m in messages],
                **self.options}

    async def complete(self, messages: Sequence[Message]) -> dict[str, Any]:
        try:
            answer = await self.llm.complete(self.request(messages))
        except (LlmError, InvalidRequest) as exc:
            raise _agent_error(exc) from exc
        self.answers.append(answer)
        return answer

    async def text(self, messages: Sequence[Message]) -> str:
        return str((await self.complete(messages))["text"])

    async def stream(self, messages: Sequence[Message]) -> str:
        try:
            answer = await stream_answer(self.llm.stream(self.request(messages)), self.emit_delta)
        except StreamFailed as failed:
            await self.emit("output_error", {"code": failed.code, "message": failed.message})
            raise RetryableAgentError(
                f"the model's answer broke off ({failed.code}: {failed.message}); the task is "
                "retried and streams again from the start",
                {"code": failed.code, "deployment": failed.deployment}) from failed
        except (LlmError, InvalidRequest) as exc:
            raise _agent_error(exc) from exc
        self.answers.append(answer)
        return str(answer["text"])

    async def emit_delta(self, text: str, index: int) -> None:
        if self.events is not None:
            await self.events.emit(self.task, "output_delta", {"text": text, "index": index})

    async def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Emit an event, best effort (see `actors.agents.llm_stream`)."""
        if self.events is None:
            return
        try:
            await self.events.emit(self.task, kind, data)
        except Exception as exc:
            log.warning("the %s event could not be recorded (%s: %s)", kind,
                        type(exc).__name__, exc)

    def result(self, key: str, value: Any) -> dict[str, Any]:
        last = self.answers[-1]
        usages = [a["usage"] for a in self.answers if a.get("usage")]
        usage = None if not usages else {
            "input_tokens": sum(int(u["input_tokens"]) for u in usages),
            "output_tokens": sum(int(u["output_tokens"]) for u in usages)}
        return {key: value, "model": last.get("model"), "deployment": last.get("deployment"),
                "usage": usage, "cost_usd": sum(float(a.get("cost_usd") or 0.0)
                                                for a in self.answers),
                "cached": all(bool(a.get("cached")) for a in self.answers),
                "calls": len(self.answers)}


def _agent_error(exc: LlmError | InvalidRequest) -> Exception:
    """The agent's error for a model error: retried only when another attempt may succeed."""
    if isinstance(exc, BudgetExceeded):
        return InvalidTaskInput(f"the tenant's model token budget is spent: {exc.message}",
                                {"code": exc.code, **exc.details})
    if isinstance(exc, BadModelRequest):
        return InvalidTaskInput(f"the model refused the request: {exc.message}",
                                {"code": exc.code, **exc.details})
    if isinstance(exc, LlmError):
        return RetryableAgentError(f"the model could not answer now ({exc.code}): "
                                   f"{exc.message}", {"code": exc.code})
    if getattr(exc, "code", "") == "token_budget_exceeded":
        return InvalidTaskInput(f"the tenant's model token budget is spent: {exc.message}",
                                {"code": exc.code, **exc.details})
    return InvalidTaskInput(f"the model gateway refused the request: {exc.message}",
                            dict(exc.details))


async def _classify(call: _Calls, text: str, labels: list[str], attempts: int,
                    system: str | None) -> dict[str, Any]:
    listed = "\n".join(f"- {label}" for label in labels)
    opening = [Message("system", CLASSIFY.format(labels=listed)
                       + (f"\n\n{system}" if system else "")), Message("user", text)]
    messages = list(opening)
    answers: list[str] = []
    for _ in range(attempts):
        answer = await call.text(messages)
        label = _label_of(answer, labels)
        if label is not None:
            return call.result("label", label)
        answers.append(answer)
        messages = [*opening, Message("assistant", answer[:2000]),
                    Message("user", NOT_A_LABEL.format(answer=answer.strip()[:200],
                                                       labels=", ".join(labels)))]
    raise InvalidTaskInput(
        f"the model answered with none of the labels in {attempts} attempt(s); the last "
        f"answer was {answers[-1].strip()[:200]!r}", {"field": "labels", "answers": answers})


def _label_of(answer: str, labels: list[str]) -> str | None:
    """The label `answer` names: exactly, or but for case, quotes and a final full stop."""
    cleaned = answer.strip().strip("\"'`*").rstrip(".").strip().casefold()
    matches = [label for label in labels if label.strip().casefold() == cleaned]
    return matches[0] if len(matches) == 1 else None


async def _extract(call: _Calls, text: str, payload: dict[str, Any]) -> dict[str, Any]:
    if "schema" not in payload:
        raise invalid("extract needs payload 'schema': the JSON Schema of the answer",
                      field="schema")
    check_schema(payload["schema"])
    extraction = await extract_json(text, payload["schema"], call.text,
                                    max_attempts=_attempts(payload),
                                    instructions=_optional_text(payload, "instructions"))
    return {**call.result("data", extraction.value), "problems": list(extraction.problems)}


def _messages(task: AgentTask, operation: str) -> list[Message]:
    payload = task.payload
    system = _optional_text(payload, "system")
    if operation == "summarize":
        return [Message("system", SUMMARIZE + (f"\n\n{system}" if system else "")),
                Message("user", _source_text(task))]
    if operation == "translate":
        language = _optional_text(payload, "target_language")
        if language is None:
            raise invalid("translate needs payload 'target_language', like \"French\"",
                          field="target_language")
        return [Message("system", TRANSLATE.format(language=language)
                        + (f"\n\n{system}" if system else "")),
                Message("user", _source_text(task))]
    opening = [Message("system", system)] if system else []
    _source_text(task)  # one input at most
    if "messages" in payload:
        return [*opening, *_conversation(payload["messages"])]
    return [*opening, Message("user", _source_text(task))]


def _source_text(task: AgentTask) -> str:
    """The input: the one of prompt/text given, else the task's description."""
    given = [name for name in INPUT_FIELDS if name in task.payload]
    if len(given) > 1:
        raise invalid(f"give one of payload 'prompt', 'messages' or 'text', not "
                      f"{' and '.join(repr(g) for g in given)}", field=given[1])
    if not given:
        return task.description
    if given[0] == "messages":
        if task.payload.get("operation", "chat") in ("chat", "complete"):
            return ""  # the conversation is the input (see `_messages`)
        raise invalid("payload 'messages' works with chat and complete; give 'text'",
                      field="messages")
    value = _optional_text(task.payload, given[0])
    if value is None:
        raise invalid(f"payload '{given[0]}' must not be empty", field=given[0])
    return value


def _conversation(value: Any) -> list[Message]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_MESSAGES:
        raise invalid(f"payload 'messages' must be a list of 1 to {MAX_MESSAGES} messages, got "
                      f"{json_type(value)}", field="messages")
    messages = []
    for i, item in enumerate(value):
        if not (isinstance(item, dict) and set(item) == {"role", "content"}
                and item["role"] in ROLES and isinstance(item["content"], str)):
            raise invalid(f"payload 'messages'[{i}] must be {{\"role\": one of "
                          f"{', '.join(ROLES)}, \"content\": a string}}",
                          field=f"messages[{i}]")
        messages.append(Message(item["role"], item["content"]))
    return messages


def _labels(payload: dict[str, Any]) -> list[str]:
    labels = payload.get("labels")
    if (not isinstance(labels, list) or not 2 <= len(labels) <= MAX_LABELS
            or not all(isinstance(l, str) and 0 < len(l.strip()) <= MAX_LABEL_CHARS
                       for l in labels)):
        raise invalid(f"classify needs payload 'labels': a list of 2 to {MAX_LABELS} non-empty "
                      f"strings of at most {MAX_LABEL_CHARS} characters", field="labels")
    folded = [label.strip().casefold() for label in labels]
    repeated = next((l for i, l in enumerate(labels) if folded[i] in folded[:i]), None)
    if repeated is not None:
        raise invalid(f"payload 'labels' names {repeated!r} twice (labels are compared "
                      "without case)", field="labels")
    return labels


def _options(payload: dict[str, Any]) -> dict[str, Any]:
    """The request's model options, checked (the gateway checks the limits it configures)."""
    options: dict[str, Any] = {"group": _optional_text(payload, "model")}
    tokens = payload.get("max_tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)
                               or tokens < 1):
        raise invalid(f"payload 'max_tokens' must be a whole number of at least 1, got "
                      f"{tokens!r}", field="max_tokens")
    options["max_tokens"] = tokens
    temperature = payload.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not 0.0 <= temperature <= 2.0:
        raise invalid(f"payload 'temperature' must be a number from 0 to 2, got "
                      f"{temperature!r}", field="temperature")
    options["temperature"] = float(temperature)
    ttl = payload.get("cache_ttl_s")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))
                            or not ttl > 0):
        raise invalid(f"payload 'cache_ttl_s' must be a number of seconds above 0, got "
                      f"{ttl!r}", field="cache_ttl_s")
    options["cache_ttl_s"] = None if ttl is None else float(ttl)
    return options


def _attempts(payload: dict[str, Any]) -> int:
    value = payload.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS:
        raise invalid(f"payload 'max_attempts' must be a whole number from 1 to "
                      f"{MAX_ATTEMPTS}, got {value!r}", field="max_attempts")
    return value


def _optional_text(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"payload '{name}' must be a string, got {json_type(value)}", field=name)
    return value if value.strip() else None


def _flag(payload: dict[str, Any], name: str) -> bool:
    value = payload.get(name, False)
    if not isinstance(value, bool):
        raise invalid(f"payload '{name}' must be true or false, got {json_type(value)}",
                      field=name)
    return value
