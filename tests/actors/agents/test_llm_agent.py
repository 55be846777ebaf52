"""The `llm` agent against fake ports: its operations, its input checks, how model errors map to
retried or failed tasks, and streamed output coalesced into task events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from actors.agents.llm import Llm
from actors.errors import InvalidTaskInput, RetryableAgentError
from ml.llm.fallback import NoDeploymentAnswered
from ml.llm.types import BadModelRequest, BudgetExceeded, ProviderTimeout, RateLimited
from storage.errors import InvalidRequest
from storage.messages import AgentTask


def answer(text: str, usage: tuple[int, int] | None = (10, 5), cost: float = 0.001,
           cached: bool = False) -> dict[str, Any]:
    return {"text": text, "model": "fake-model", "deployment": "primary", "group": "default",
            "finish_reason": "stop", "cached": cached, "cost_usd": cost,
            "usage": None if usage is None else {"input_tokens": usage[0],
                                                 "output_tokens": usage[1]}}


class FakeModels:
    """The gateway port: scripted answers (or errors, or stream items) in order; every request
    kept."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []

    def _next(self, request: dict[str, Any]) -> Any:
        self.requests.append(request)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        step = self._next(request)
        return answer(step) if isinstance(step, str) else step

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        for item in self._next(request):
            if isinstance(item, float):
                await asyncio.sleep(item)
                continue
            yield item


class FakeEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, str, dict[str, Any]]] = []

    async def emit(self, task: AgentTask, kind: str, data: dict[str, Any]) -> None:
        self.events.append((task.task_id, task.attempt, kind, data))

    def deltas(self) -> list[dict[str, Any]]:
        return [data for _, _, kind, data in self.events if kind == "output_delta"]


def agent(models: FakeModels, events: FakeEvents | None = None) -> Llm:
    llm = Llm()
    llm.llm = models
    llm.events = events
    return llm


def task(payload: dict[str, Any] | None = None, description: str = "help with this",
         attempt: int = 1) -> AgentTask:
    return AgentTask("t-1", attempt, "llm", description, payload or {}, 30.0, tenant="acme")


def messages_of(request: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request["messages"]]


# ----------------------------------------------------------------- operations


async def test_a_routed_description_is_the_prompt_and_the_answer_carries_usage_and_cost():
    models = FakeModels(answer("Bonjour", usage=(12, 3), cost=0.0042))
    result = await agent(models).run(task(description="translate 'good morning' into French"))
    assert result == {"text": "Bonjour", "model": "fake-model", "deployment": "primary",
                      "usage": {"input_tokens": 12, "output_tokens": 3}, "cost_usd": 0.0042,
                      "cached": False, "calls": 1}
    [request] = models.requests
    assert messages_of(request) == [("user", "translate 'good morning' into French")]
    assert (request["tenant"], request["task_id"]) == ("acme", "t-1")
    assert (request["group"], request["max_tokens"], request["cache_ttl_s"]) == (None, None, None)


async def test_chat_passes_system_messages_and_model_options():
    models = FakeModels("fine, thanks")
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "how are you?"}]
    await agent(models).run(task({"operation": "complete", "messages": conversation,
                                  "system": "Be brief.", "model": "fast", "max_tokens": 50,
                                  "temperature": 0.7, "cache_ttl_s": 60}))
    [request] = models.requests
    assert messages_of(request) == [("system", "Be brief."), ("user", "hi"),
                                    ("assistant", "hello"), ("user", "how are you?")]
    assert (request["group"], request["max_tokens"], request["temperature"],
            request["cache_ttl_s"]) == ("fast", 50, 0.7, 60.0)


async def test_summarize_and_translate_ask_for_the_answer_alone():
    models = FakeModels("A short summary.", "Guten Morgen")
    summary = await agent(models).run(task({"operation": "summarize", "text": "Long text."}))
    translation = await agent(models).run(task({"operation": "translate", "text": "Good morning",
                                                "target_language": "German"}))
    assert (summary["text"], translation["text"]) == ("A short summary.", "Guten Morgen")
    summarize, translate = models.requests
    assert summarize["messages"][0]["role"] == "system"
    assert "summary alone" in summarize["messages"][0]["content"]
    assert summarize["messages"][1] == {"role": "user", "content": "Long text."}
    assert "into German" in translate["messages"][0]["content"]
    assert translate["messages"][1] == {"role": "user", "content": "Good morning"}


async def test_classify_answers_one_of_the_labels():
    models = FakeModels(' "Billing." ')
    result = await agent(models).run(task({"operation": "classify", "labels": ["billing", "bug"],
                                           "text": "I was charged twice"}))
    assert result["label"] == "billing" and result["calls"] == 1
    system = models.requests[0]["messages"][0]["content"]
    assert "- billing\n- bug" in system


async def test_classify_asks_again_with_the_reason_and_sums_the_usage():
    models = FakeModels(answer("It is probably a bug report", usage=(10, 6), cost=0.002),
                        answer("bug", usage=(30, 1), cost=0.003))
    result = await agent(models).run(task({"operation": "classify", "labels": ["billing", "bug"],
                                           "text": "the app crashes"}))
    assert result["label"] == "bug"
    assert result["usage"] == {"input_tokens": 40, "output_tokens": 7}
    assert result["cost_usd"] == pytest.approx(0.005) and result["calls"] == 2
    retry = messages_of(models.requests[1])
    assert retry[-2] == ("assistant", "It is probably a bug report")
    assert "is not one of the labels" in retry[-1][1] and "billing, bug" in retry[-1][1]


async def test_classify_gives_up_after_its_attempts_without_a_retry_of_the_task():
    models = FakeModels("maybe", "no idea")
    with pytest.raises(InvalidTaskInput) as raised:
        await agent(models).run(task({"operation": "classify", "labels": ["a", "b"],
                                      "max_attempts": 2}))
    assert "none of the labels in 2 attempt(s)" in raised.value.message
    assert raised.value.details["answers"] == ["maybe", "no idea"]


async def test_extract_returns_json_matching_the_schema_after_feeding_back_errors():
    schema = {"type": "object", "properties": {"total": {"type": "number"}},
              "required": ["total"], "additionalProperties": False}
    models = FakeModels('{"total": "twelve"}', json.dumps({"total": 12}))
    result = await agent(models).run(task({"operation": "extract", "schema": schema,
                                           "text": "Total due: 12 EUR"}))
    assert result["data"] == {"total": 12} and result["calls"] == 2
    assert len(result["problems"]) == 1 and "does not match the schema" in result["problems"][0]
    assert "That answer was refused" in messages_of(models.requests[1])[-1][1]


async def test_extract_refuses_a_bad_schema_before_any_model_call():
    models = FakeModels()
    with pytest.raises(InvalidTaskInput):
        await agent(models).run(task({"operation": "extract", "schema": {"type": "nonsense"},
                                      "text": "x"}))
    with pytest.raises(InvalidTaskInput, match="needs payload 'schema'"):
        await agent(models).run(task({"operation": "extract", "text": "x"}))
    assert models.requests == []


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize(("payload", "field"), [
    ({"operation": "poem"}, "operation"),
    ({"target_lang": "French"}, "target_lang"),
    ({"operation": "translate", "text": "hi"}, "target_language"),
    ({"operation": "classify", "labels": ["only one"]}, "labels"),
    ({"operation": "classify", "labels": ["Bug", "bug "]}, "labels"),
    ({"operation": "classify", "labels": [f"l{i}" for i in range(101)]}, "labels"),
    ({"operation": "classify", "labels": ["a", 3]}, "labels"),
    ({"prompt": "hi", "text": "hello"}, "text"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0]"),
    ({"operation": "summarize", "messages": [{"role": "user", "content": "x"}]}, "messages"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"temperature": 3}, "temperature"),
    ({"cache_ttl_s": -1}, "cache_ttl_s"),
    ({"stream": "yes"}, "stream"),
    ({"operation": "classify", "labels": ["a", "b"], "stream": True}, "stream"),
    ({"prompt": 42}, "prompt"),
    ({"operation": "extract", "schema": {}, "text": "x", "max_attempts": 9}, "max_attempts"),
])
async def test_bad_input_names_its_field_and_calls_no_model(payload, field):
    models = FakeModels()
    with pytest.raises(InvalidTaskInput) as raised:
        await agent(models).run(task(payload))
    assert raised.value.details.get("field") == field, raised.value.message
    assert models.requests == []


async def test_an_agent_without_a_gateway_says_how_to_configure_one():
    with pytest.raises(InvalidTaskInput, match="YMERA_LLM_BASE_URL"):
        await Llm().run(task())


# ----------------------------------------------------------------- model errors


@pytest.mark.parametrize("error", [
    NoDeploymentAnswered("no deployment answered: primary: rate_limited"),
    RateLimited("slow down", "primary", 2.0),
    ProviderTimeout("no answer in 60s", "primary"),
])
async def test_transient_model_errors_are_retried_by_the_platform(error):
    with pytest.raises(RetryableAgentError) as raised:
        await agent(FakeModels(error)).run(task())
    assert raised.value.retryable and raised.value.details["code"] == error.code


@pytest.mark.parametrize(("error", "words"), [
    (BudgetExceeded("tenant 'acme' has 0 tokens left"), "token budget is spent"),
    (BadModelRequest("model 'gpt-x' does not exist", "primary"), "model refused"),
    (InvalidRequest("unknown model group 'huge'", {"field": "group"}), "gateway refused"),
])
async def test_errors_another_attempt_would_repeat_fail_the_task_at_once(error, words):
    with pytest.raises(InvalidTaskInput) as raised:
        await agent(FakeModels(error)).run(task())
    assert not raised.value.retryable and words in raised.value.message


# ----------------------------------------------------------------- streaming


async def test_a_streamed_answer_is_coalesced_into_ordered_delta_events():
    pieces = [{"delta": "ab"}] * 150 + [{"delta": "c"}]
    text = "ab" * 150 + "c"
    events = FakeEvents()
    models = FakeModels([*pieces, {"done": answer(text)}])
    result = await agent(models, events).run(task({"stream": True}, attempt=2))
    deltas = events.deltas()
    assert result["text"] == text
    assert "".join(d["text"] for d in deltas) == text
    assert [d["index"] for d in deltas] == list(range(len(deltas)))
    assert 2 <= len(deltas) <= 3  # ~200 characters each, not 151 tiny events
    assert {attempt for _, attempt, _, _ in events.events} == {2}


async def test_a_huge_delta_is_split_into_events_the_orchestrator_accepts():
    events = FakeEvents()
    text = "x" * 9000
    await agent(FakeModels([{"delta": text}, {"done": answer(text)}]), events).run(
        task({"stream": True}))
    assert [len(d["text"]) for d in events.deltas()] == [4000, 4000, 1000]


async def test_a_slow_stream_flushes_what_it_has_within_the_coalescing_window():
    events = FakeEvents()
    models = FakeModels([{"delta": "Hel"}, {"delta": "lo"}, 0.3, {"delta": " world"},
                         {"done": answer("Hello world")}])
    received: list[str] = []

    async def watch() -> None:  # what a reader sees while the model pauses
        await asyncio.sleep(0.2)
        received.extend(d["text"] for d in events.deltas())

    _, result = await asyncio.gather(watch(), agent(models, events).run(task({"stream": True})))
    assert received == ["Hello"]
    assert [d["text"] for d in events.deltas()] == ["Hello", " world"]
    assert result["text"] == "Hello world"


async def test_a_stream_broken_mid_answer_emits_an_error_event_and_is_retried():
    events = FakeEvents()
    models = FakeModels([{"delta": "The answer is"},
                         {"error": {"code": "stream_broken", "message": "connection reset",
                                    "deployment": "primary"}}])
    with pytest.raises(RetryableAgentError, match="streams again from the start"):
        await agent(models, events).run(task({"operation": "translate", "text": "hi",
                                               "target_language": "French", "stream": True}))
    kinds = [(kind, data) for _, _, kind, data in events.events]
    assert kinds == [("output_delta", {"text": "The answer is", "index": 0}),
                     ("output_error", {"code": "stream_broken", "message": "connection reset"})]


async def test_a_stream_that_stops_without_its_answer_is_never_a_silent_truncation():
    events = FakeEvents()
    with pytest.raises(RetryableAgentError, match="stream_ended"):
        await agent(FakeModels([{"delta": "partial"}]), events).run(task({"stream": True}))
    assert [kind for _, _, kind, _ in events.events] == ["output_delta", "output_error"]


async def test_a_stream_failing_before_its_first_delta_maps_like_a_call():
    with pytest.raises(RetryableAgentError):
        await agent(FakeModels(NoDeploymentAnswered("none"))).run(task({"stream": True}))


async def test_events_that_cannot_be_recorded_do_not_fail_the_answer(caplog):
    class DownEvents(FakeEvents):
        async def emit(self, task: AgentTask, kind: str, data: dict[str, Any]) -> None:
            raise RetryableAgentError("no orchestrator")

    models = FakeModels([{"delta": "ok"}, {"done": answer("ok")}])
    result = await agent(models, DownEvents()).run(task({"stream": True}))
    assert result["text"] == "ok"
    assert "could not be recorded" in caplog.text

