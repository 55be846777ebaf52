"""The orchestrator's planner: the pure core with a scripted model (a good plan, a bad one then
a good one, only bad ones), what the gateway is asked (tenant, no cache, agents and payload
hints), and the orchestrator in process: no model configured, plan only, and `run=True`
starting the plan as a run of the caller's tenant, once."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from actors.config import PoolConfig
from actors.planning import (
    MAX_HINT_CHARS, MAX_REQUEST_CHARS, input_outline, payload_hints, plan_key, plan_request)
from ml.llm.planner import PlanRefused
from ml.llm.settings import NO_MODEL_HINT, LlmSettings, NoModelConfigured, single_endpoint
from ml.llm.types import BudgetExceeded
from storage.errors import InvalidRequest
from storage.messages import AgentSpec
from storage.workflow_records import RunStatus
from storage.workflow_spec import WorkflowLimits
from tests.support.inprocess_platform import inprocess_orchestrator

AGENTS = (
    AgentSpec("calculator", "Evaluates arithmetic.", ("arithmetic",), ("what is 2 + 2",),
              payload_hint={"expression": "(120 + 80) * 1.2"}),
    AgentSpec("sleeper", "Sleeps, then echoes.", ("testing",), ("sleep a bit",)),
)
GOOD = {"name": "total_then_echo", "version": "1", "steps": [
    {"id": "total", "agent_type": "calculator", "payload": {"expression": "${ input.sum }"}},
    {"id": "echo", "agent_type": "sleeper", "depends_on": ["total"],
     "payload": {"echo": "${ steps.total.output.value }"}},
]}
UNKNOWN_AGENT = {"name": "bad", "steps": [{"id": "x", "agent_type": "astrologer",
                                          "payload": {}}]}
SLEEPY = {"name": "sleepy", "version": "1", "steps": [
    {"id": "nap", "agent_type": "sleeper", "payload": {"echo": "${ input.n }"}}]}


class ScriptedGateway:
    """The gateway's `complete`: answers with the scripted texts in order, recording each
    request."""

    def __init__(self, *texts: str | Exception) -> None:
        self.texts = list(texts)
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        text = self.texts.pop(0)
        if isinstance(text, Exception):
            raise text
        return {"text": text, "model": "fake-model", "deployment": "default",
                "group": request["group"] or "default", "finish_reason": "stop",
                "usage": {"input_tokens": 100, "output_tokens": 40}, "cost_usd": 0.001,
                "cached": False}


async def planned(gateway: ScriptedGateway, request: str = "total the sum, then echo it",
                  **options: Any) -> Any:
    return await plan_request(request, tenant=options.pop("tenant", "acme"), agents=AGENTS,
                              complete=gateway, limits=WorkflowLimits(), **options)


async def test_a_good_first_answer_is_the_plan_and_the_tenant_pays() -> None:
    gateway = ScriptedGateway(json.dumps(GOOD))
    plan, usage = await planned(gateway, group="fast")
    assert plan.document == GOOD and plan.attempts == 1 and plan.problems == ()
    [request] = gateway.requests
    assert request["tenant"] == "acme" and request["group"] == "fast"
    assert request["temperature"] == 0.0 and request["cache_ttl_s"] is None
    assert request["task_id"] is None
    system, user = request["messages"]
    assert system["role"] == "system" and user == {"role": "user",
                                                   "content": "total the sum, then echo it"}
    assert "- calculator: Evaluates arithmetic." in system["content"]
    assert 'payload: for example {"expression": "(120 + 80) * 1.2"}' in system["content"]
    assert usage == {"calls": 1, "input_tokens": 100, "output_tokens": 40, "cost_usd": 0.001,
                     "models": ["fake-model"]}


async def test_a_refused_answer_is_fed_back_and_the_next_one_taken() -> None:
    gateway = ScriptedGateway(json.dumps(UNKNOWN_AGENT), "```json\n" + json.dumps(GOOD) + "\n```")
    plan, usage = await planned(gateway)
    assert plan.document == GOOD and plan.attempts == 2
    assert len(plan.problems) == 1 and "astrologer" in plan.problems[0]
    retry = gateway.requests[1]["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert "astrologer" in retry[3]["content"] and "refused" in retry[3]["content"]
    assert usage["calls"] == 2 and usage["input_tokens"] == 200


async def test_only_bad_answers_are_refused_with_every_attempts_reason() -> None:
    cycle = {"name": "loop", "steps": [
        {"id": "a", "agent_type": "sleeper", "depends_on": ["b"]},
        {"id": "b", "agent_type": "sleeper", "depends_on": ["a"]}]}
    gateway = ScriptedGateway(json.dumps(UNKNOWN_AGENT), "Sure! Here is your plan.",
                              json.dumps(cycle))
    with pytest.raises(PlanRefused) as refused:
        await planned(gateway)
    attempts = refused.value.details["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert "astrologer" in attempts[0]["problem"]
    assert "JSON workflow document alone" in attempts[1]["problem"]
    assert "cycle" in attempts[2]["problem"]
    assert len(gateway.requests) == 3  # bounded


async def test_model_errors_pass_through_as_themselves() -> None:
    gateway = ScriptedGateway(BudgetExceeded("tenant acme's token budget is spent"))
    with pytest.raises(BudgetExceeded, match="budget is spent"):
        await planned(gateway)


@pytest.mark.parametrize("request_text, tenant, group, field", [
    ("", "acme", None, "request"),
    ("   ", "acme", None, "request"),
    ("x" * (MAX_REQUEST_CHARS + 1), "acme", None, "request"),
    ("plan it", "", None, "tenant"),
    ("plan it", "acme", " ", "model"),
])
async def test_bad_requests_are_refused_before_any_model_call(
        request_text: str, tenant: str, group: str | None, field: str) -> None:
    gateway = ScriptedGateway()
    with pytest.raises(InvalidRequest) as refused:
        await planned(gateway, request_text, tenant=tenant, group=group)
    assert refused.value.details["field"] == field and gateway.requests == []


async def test_the_input_is_shown_as_its_shape_never_its_values() -> None:
    gateway = ScriptedGateway(json.dumps(GOOD))
    secret_input = {"sum": "1 + 2", "rows": [{"name": "Ada Lovelace", "score": 97}] * 3,
                    "flag": True}
    await planned(gateway, run_input=secret_input)
    user = gateway.requests[0]["messages"][1]["content"]
    assert "Ada Lovelace" not in user and "97" not in user and "1 + 2" not in user
    assert '"rows": [{"name": "<text>", "score": "<number>"}, "<3 items like the first>"]' \
        in user
    assert '"flag": "<true or false>"' in user
    assert len(input_outline({"k": ["x" * 10] * 10_000, **{f"f{i}": i for i in range(500)}})) \
        < 2100


def test_payload_hints_are_examples_or_texts_and_long_ones_only_their_fields() -> None:
    long_hint = {"rows": [{"n": i} for i in range(MAX_HINT_CHARS)], "by": ["n"]}
    hints = payload_hints([
        AgentSpec("a", "d", (), (), payload_hint={"x": 1}),
        AgentSpec("b", "d", (), (), payload_hint="give 'text'"),
        AgentSpec("c", "d", (), (), payload_hint=long_hint),
        AgentSpec("d", "d", (), ()),
    ])
    assert hints == {"a": 'for example {"x": 1}', "b": "give 'text'",
                     "c": "an object with rows, by"}


def test_the_run_key_follows_the_document_and_the_input() -> None:
    assert plan_key(GOOD, {"sum": "1"}) == plan_key(json.loads(json.dumps(GOOD)), {"sum": "1"})
    assert plan_key(GOOD, {"sum": "1"}) != plan_key(GOOD, {"sum": "2"})
    assert plan_key(GOOD, None) != plan_key(SLEEPY, None)
    assert len(plan_key(GOOD, None)) <= 200


# ------------------------------------------------------------------ the orchestrator in process

LLM = LlmSettings(config=single_endpoint("http://127.0.0.1:9/v1", "fake-model"))


async def test_without_a_model_plan_says_how_to_configure_one(tmp_path: Path) -> None:
    async with inprocess_orchestrator(tmp_path) as orchestrator:
        with pytest.raises(NoModelConfigured) as refused:
            await orchestrator.plan("acme", "add two numbers")
    assert refused.value.message == NO_MODEL_HINT


async def test_plan_alone_runs_nothing_and_run_starts_it_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with inprocess_orchestrator(
            tmp_path, pools={"sleeper": PoolConfig(replicas=1)}) as orchestrator:
        orchestrator.config = dataclasses.replace(orchestrator.config, llm=LLM)
        gateway = ScriptedGateway(*[json.dumps(SLEEPY)] * 3)
        monkeypatch.setattr(orchestrator, "_gateway_complete", gateway)

        reviewed = await orchestrator.plan("acme", "echo n back", input={"n": 7})
        assert reviewed["run_id"] is None and reviewed["document"] == SLEEPY
        assert reviewed["rendered"].splitlines()[0].startswith("workflow sleepy")
        assert "nap [sleeper]" in reviewed["rendered"] and reviewed["attempts"] == 1
        assert (await orchestrator.list_runs("acme")).runs == ()

        started = await orchestrator.plan("acme", "echo n back", run=True, input={"n": 7})
        assert started["run_id"] is not None
        detail = await orchestrator.wait_run(started["run_id"], 10, tenant="acme")
        assert detail.run.status is RunStatus.SUCCEEDED and detail.run.tenant == "acme"
        assert detail.steps[0].output["echo"] == 7
        again = await orchestrator.plan("acme", "echo n back", run=True, input={"n": 7})
        assert again["run_id"] == started["run_id"]  # the same plan and input: one run
        assert all(r["tenant"] == "acme" for r in gateway.requests)
        assert (await orchestrator.list_runs("globex")).runs == ()


async def test_run_refuses_a_non_boolean_and_input_the_run_would_refuse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with inprocess_orchestrator(tmp_path) as orchestrator:
        orchestrator.config = dataclasses.replace(orchestrator.config, llm=LLM)
        monkeypatch.setattr(orchestrator, "_gateway_complete",
                            ScriptedGateway(json.dumps(SLEEPY)))
        with pytest.raises(InvalidRequest, match="run must be true or false"):
            await orchestrator.plan("acme", "echo", run="yes")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest, match="NUL"):
            await orchestrator.plan("acme", "echo", run=True, input={"n": "a\x00b"})
        assert (await orchestrator.list_runs("acme")).runs == ()


async def test_the_orchestrator_plans_with_its_registered_agents_and_limits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = WorkflowLimits(max_steps=1)
    async with inprocess_orchestrator(tmp_path, workflow_limits=limits) as orchestrator:
        orchestrator.config = dataclasses.replace(orchestrator.config, llm=LLM)
        gateway = ScriptedGateway(*[json.dumps(GOOD)] * 3)
        monkeypatch.setattr(orchestrator, "_gateway_complete", gateway)
        with pytest.raises(PlanRefused) as refused:
            await orchestrator.plan("acme", "total then echo")
        system = gateway.requests[0]["messages"][0]["content"]
        registered = {line[2:].split(":")[0] for line in system.splitlines()
                      if line.startswith("- ") and ":" in line}
        assert set(orchestrator.agent_types) <= registered
        assert 'for example {"expression": "(120 + 80) * 1.2"}' in system  # the built-in hint
        assert "at most 1 steps" in system
        problems = [a["problem"] for a in refused.value.details["attempts"]]
        assert len(problems) == 3 and all("at most 1 per run" in p for p in problems)
        assert gateway.requests[0]["max_tokens"] == 4096
