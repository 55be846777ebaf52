"""The planner: scripted model answers, checked against the registry and the spec rules."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest

from ml.llm.planner import Plan, PlanRefused, parse_answer, plan_workflow, render_plan
from ml.llm.types import Message, RateLimited
from storage.errors import InvalidRequest
from storage.messages import AgentSpec
from storage.workflow_spec import WorkflowLimits

AGENTS = (
    AgentSpec("data_processor", "Works on tabular data: filter, sort, group-by with aggregates.",
              ("group rows by a column and aggregate",), ("total sales per region",)),
    AgentSpec("calculator", "Evaluates arithmetic and statistics over lists of numbers.",
              ("sum, mean and median of numbers",), ("what is the mean of 3, 5 and 10?",)),
    AgentSpec("text_analysis", "Analyses text: keywords, summaries, sentiment.",
              ("extractive summaries",), ("summarize this article",)),
)
NAMES = {agent.name for agent in AGENTS}
REQUEST = "Total the sales per region in the rows I give you, then add up the region totals."

GOOD = {
    "name": "sales_total", "version": "1",
    "steps": [
        {"id": "by_region", "agent_type": "data_processor",
         "payload": {"operation": "group_by", "rows": "${ input.rows }", "by": "region",
                     "aggregates": {"sales": "sum"}}},
        {"id": "total", "agent_type": "calculator", "depends_on": ["by_region"],
         "payload": {"operation": "sum",
                     "numbers": "${ steps.by_region.output.rows[*].sales }"}},
    ],
}


def _with(**changes: Any) -> dict[str, Any]:
    """GOOD with its second step changed."""
    document = json.loads(json.dumps(GOOD))
    document["steps"][1].update(changes)
    return document


CYCLE = {"name": "loop", "steps": [
    {"id": "a", "agent_type": "calculator", "depends_on": ["b"], "payload": {}},
    {"id": "b", "agent_type": "calculator", "depends_on": ["a"], "payload": {}}]}


class ScriptedModel:
    """Answers with the scripted texts in order, recording every conversation it was given."""

    def __init__(self, *answers: str | dict[str, Any]) -> None:
        self.answers = [a if isinstance(a, str) else json.dumps(a) for a in answers]
        self.calls: list[list[Message]] = []

    async def __call__(self, messages: Sequence[Message]) -> str:
        self.calls.append(list(messages))
        if len(self.calls) > len(self.answers):
            raise AssertionError("the planner asked more often than scripted")
        return self.answers[len(self.calls) - 1]


async def test_a_good_plan_is_accepted_at_the_first_attempt():
    model = ScriptedModel(GOOD)
    plan = await plan_workflow(REQUEST, AGENTS, model)
    assert isinstance(plan, Plan)
    assert (plan.attempts, plan.problems, plan.document) == (1, (), GOOD)
    assert [step.id for step in plan.spec.steps] == ["by_region", "total"]
    assert plan.spec.step("total").depends_on == ("by_region",)
    [conversation] = model.calls
    assert [m.role for m in conversation] == ["system", "user"]
    assert conversation[1].content == REQUEST


async def test_the_prompt_lists_exactly_the_registered_agents_and_their_hints():
    model = ScriptedModel(GOOD)
    await plan_workflow(REQUEST, AGENTS, model, payload_hints={
        "calculator": '{"operation": "sum" | "mean", "numbers": [...]}',
        "text_analysis": {"type": "object", "required": ["text"]}})
    prompt = model.calls[0][0].content
    catalogue = prompt.split("\nAgents:\n", 1)[1]
    assert set(re.findall(r"^- ([a-z_]+):", catalogue, re.MULTILINE)) == NAMES
    for agent in AGENTS:
        assert agent.description in catalogue and agent.examples[0] in catalogue
    assert '"numbers": [...]' in catalogue
    assert '{"type":"object","required":["text"]}' in catalogue
    for unregistered in ("validation", "monitoring", "learning", "communication"):
        assert unregistered not in prompt
    alone = ScriptedModel(_with(agent_type="data_processor"))
    await plan_workflow(REQUEST, AGENTS[:1], alone)
    assert "calculator" not in alone.calls[0][0].content
    assert "text_analysis" not in alone.calls[0][0].content


async def test_a_fenced_answer_is_read_but_prose_around_the_json_is_refused():
    fenced = "```json\n" + json.dumps(GOOD, indent=2) + "\n```"
    assert (await plan_workflow(REQUEST, AGENTS, ScriptedModel(fenced))).attempts == 1
    model = ScriptedModel("Here is your plan: " + json.dumps(GOOD), GOOD)
    plan = await plan_workflow(REQUEST, AGENTS, model)
    assert plan.attempts == 2 and "alone" in plan.problems[0]


async def test_bad_json_is_fed_back_and_the_corrected_plan_accepted():
    broken = json.dumps(GOOD)[:-3]
    model = ScriptedModel(broken, GOOD)
    plan = await plan_workflow(REQUEST, AGENTS, model)
    assert plan.attempts == 2 and plan.document == GOOD
    assert "not valid JSON" in plan.problems[0]
    retry = model.calls[1]
    assert [m.role for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[:2] == model.calls[0]
    assert retry[2].content == broken
    assert plan.problems[0] in retry[3].content


async def test_an_unknown_agent_is_refused_with_the_known_ones_named():
    model = ScriptedModel(_with(agent_type="translator"), GOOD)
    plan = await plan_workflow(REQUEST, AGENTS, model)
    assert plan.attempts == 2
    problem = plan.problems[0]
    assert "unknown agent type 'translator'" in problem
    assert "calculator, data_processor, text_analysis" in problem
    assert problem in model.calls[1][3].content


async def test_a_plan_that_always_has_a_cycle_is_refused_listing_every_attempt():
    model = ScriptedModel(CYCLE, CYCLE, CYCLE)
    with pytest.raises(PlanRefused) as refused:
        await plan_workflow(REQUEST, AGENTS, model)
    assert len(model.calls) == 3
    attempts = refused.value.details["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert all("cycle" in a["problem"] for a in attempts)
    assert "after 3 attempt(s)" in refused.value.message
    assert "attempt 3:" in refused.value.message and "a -> b -> a" in refused.value.message


@pytest.mark.parametrize(("document", "expected"), [
    (_with(payload={"numbers": "${ steps.nowhere.output }"}), "reads step 'nowhere'"),
    (_with(depends_on=[], payload={"numbers": "${ steps.by_region.output }"}),
     "not upstream of it"),
    (_with(depends_on=["ghost"]), "names step 'ghost', which does not exist"),
    (_with(agent_type=None, description="add the totals"), "name its agent_type"),
    (_with(max_attempts=50), "max_attempts"),
    (_with(payload={"expression": "${ input.bill } * 0.15"}),
     "payload.expression: '${ input.bill } * 0.15' mixes text with a ${ ... } reference"),
    (_with(payload={"numbers": ["${ input.a }", "about ${ input.b }"]}),
     "payload.numbers[1]"),
    ({"steps": GOOD["steps"]}, "name"),
    ([GOOD], "must be the JSON workflow document alone"),
])
async def test_each_broken_plan_is_refused_with_its_reason_then_retried(document: Any,
                                                                         expected: str):
    model = ScriptedModel(document, GOOD)
    plan = await plan_workflow(REQUEST, AGENTS, model)
    assert plan.attempts == 2
    assert expected in plan.problems[0]
    assert expected in model.calls[1][3].content


async def test_a_plan_over_the_platforms_limits_is_refused():
    model = ScriptedModel(GOOD, GOOD)
    with pytest.raises(PlanRefused, match="at most 1 per run"):
        await plan_workflow(REQUEST, AGENTS, model, limits=WorkflowLimits(max_steps=1),
                            max_attempts=2)
    assert len(model.calls) == 2


async def test_max_attempts_bounds_the_model_calls():
    model = ScriptedModel("no plan")
    with pytest.raises(PlanRefused, match="after 1 attempt"):
        await plan_workflow(REQUEST, AGENTS, model, max_attempts=1)
    assert len(model.calls) == 1


@pytest.mark.parametrize(("request_text", "agents", "attempts", "field"), [
    ("  ", AGENTS, 3, "request"),
    (REQUEST, (), 3, "agents"),
    (REQUEST, AGENTS + AGENTS[:1], 3, "agents"),
    (REQUEST, AGENTS, 0, "max_attempts"),
])
async def test_a_bad_call_is_refused_before_the_model_is_asked(
        request_text: str, agents: tuple[AgentSpec, ...], attempts: int, field: str):
    model = ScriptedModel(GOOD)
    with pytest.raises(InvalidRequest) as refused:
        await plan_workflow(request_text, agents, model, max_attempts=attempts)
    assert refused.value.details["field"] == field
    assert model.calls == []


async def test_a_model_error_passes_through_unchanged():
    async def limited(messages: Sequence[Message]) -> str:
        raise RateLimited("slow down", "main", 2.0)

    with pytest.raises(RateLimited) as raised:
        await plan_workflow(REQUEST, AGENTS, limited)
    assert raised.value.retry_after_s == 2.0


def test_parse_answer_refuses_what_is_not_one_plain_json_object():
    assert parse_answer("```\n{\"name\": \"x\"}\n```") == {"name": "x"}
    for answer in ('{"a": NaN}', "{" * 5000 + "}" * 5000, "```json\n{}\n``` and more"):
        with pytest.raises(InvalidRequest):
            parse_answer(answer)


def test_render_plan_lists_steps_in_dependency_order_with_their_references():
    document = {
        "name": "report", "version": "2", "failure_policy": "fail_fast",
        "steps": [
            {"id": "notify", "agent_type": "communication", "depends_on": ["total", "review"],
             "payload": {"url": "${ input.webhook_url }",
                         "message": {"total": "${ steps.total.output.value }", "kind": "sales"}}},
            {"id": "total", "agent_type": "calculator", "depends_on": ["by_region"],
             "payload": {"operation": "sum",
                         "numbers": "${ steps.by_region.output.rows[*].sales }"}},
            {"id": "by_region", "agent_type": "data_processor", "compensate": "undo",
             "payload": {"rows": "${ input.rows }", "by": "region"}},
            {"id": "review", "depends_on": ["total"],
             "approval": {"timeout_s": 3600, "on_timeout": "reject"}, "payload": {}},
            {"id": "undo", "agent_type": "communication", "payload": {"note": "rolled back"}},
        ],
    }
    text = render_plan(document)
    lines = text.splitlines()
    assert lines[0] == "workflow report (version 2, fail_fast): 5 steps"
    heads = [line for line in lines if re.match(r"^(\d+\.|-) ", line)]
    assert [h.split()[1] for h in heads] == ["by_region", "total", "review", "notify", "undo"]
    assert heads[1] == "2. total [calculator]: after by_region"
    assert heads[2].startswith("3. review [approval]: after total; waits for a person's approval")
    assert heads[4] == "- undo [communication]: undoes by_region"
    assert "     numbers: ← steps.by_region.output.rows[*].sales" in lines
    assert '     message: {"total": "← steps.total.output.value", "kind": "sales"}' in lines
    assert lines[-1] == "reads from the run input: input.rows, input.webhook_url"


def test_render_plan_refuses_a_document_with_a_cycle():
    with pytest.raises(InvalidRequest, match="cycle"):
        render_plan(CYCLE)
