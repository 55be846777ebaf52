"""The workflow spec: parsing every primitive, exact round-trips, refusals naming the step,
JMESPath references and conditions, and the topological order."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from storage.errors import InvalidRequest
from storage.workflow_refs import condition_holds, render_payload
from storage.workflow_spec import (
    ApprovalSpec, MapSpec, TimerSpec, WorkflowLimits, WorkflowSpec, compile_spec, ready_steps,
    spec_from_json)

AGENTS = ["data_processor", "calculator", "text_analysis", "communication", "learning"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"


def every_primitive() -> dict[str, Any]:
    return {
        "name": "everything", "version": "3", "failure_policy": "finish_branches",
        "limits": {"max_run_duration_s": 3600},
        "steps": [
            {"id": "load", "agent_type": "data_processor",
             "payload": {"rows": "${input.rows}", "operation": "summary"},
             "timeout_s": 30, "max_attempts": 4, "priority": 5, "compensate": "unload"},
            {"id": "score", "agent_type": "text_analysis", "depends_on": ["load"],
             "map_over": {"over": "input.reviews", "max_width": 50, "parallelism": 8},
             "payload": {"operation": "sentiment", "text": "${ item }"}},
            {"id": "mean", "agent_type": "calculator", "depends_on": ["score"],
             "payload": {"operation": "mean", "numbers": "${ steps.score.output[*].score }"}},
            {"id": "check", "approval": {"timeout_s": 600, "on_timeout": "approve"},
             "depends_on": ["mean"], "payload": {"mean": "${ steps.mean.output.value }"}},
            {"id": "pause", "timer": {"wait_s": 60}, "depends_on": ["check"]},
            {"id": "later", "timer": {"until": "2030-01-01T10:00:00+01:00"},
             "depends_on": ["check"]},
            {"id": "notify", "description": "tell the team the mean score",
             "depends_on": ["pause", "later", "mean"],
             "condition": "steps.mean.output.value > `0`",
             "payload": {"to_agent": "learning", "message": {"mean": "${steps.mean.output.value}"}}},
            {"id": "unload", "agent_type": "communication",
             "payload": {"to_agent": "learning", "message": {"undo": "${ steps.load.output }"}}},
        ]}


def test_every_primitive_parses_into_its_fields() -> None:
    spec = compile_spec(every_primitive(), AGENTS)

    assert (spec.name, spec.version, spec.failure_policy) == ("everything", "3", "finish_branches")
    assert spec.limits.max_run_duration_s == 3600 and spec.limits.max_steps == 200
    load = spec.step("load")
    assert (load.timeout_s, load.max_attempts, load.priority, load.compensate) == (30, 4, 5,
                                                                                   "unload")
    assert load.payload == {"rows": "${ input.rows }", "operation": "summary"}
    assert spec.step("score").map_over == MapSpec("input.reviews", 50, 8)
    assert spec.step("check").approval == ApprovalSpec(600.0, "approve")
    assert not spec.step("check").is_task
    assert spec.step("pause").timer == TimerSpec(wait_s=60.0)
    assert spec.step("later").timer == TimerSpec(until="2030-01-01T09:00:00+00:00")
    notify = spec.step("notify")
    assert notify.description and notify.agent_type is None
    assert notify.depends_on == ("mean", "pause", "later")  # document order
    assert notify.condition == "steps.mean.output.value > `0`"
    assert spec.compensation_ids == {"unload"}


def test_the_stored_form_is_plain_json_and_round_trips_exactly() -> None:
    spec = compile_spec(every_primitive(), AGENTS)

    stored = json.loads(json.dumps(spec.to_json()))
    assert spec_from_json(stored) == spec
    assert spec_from_json(stored).to_json() == spec.to_json()
    assert compile_spec(stored, AGENTS) == spec  # the stored form is itself a valid document
    assert hash(spec_from_json(stored)) == hash(spec)


@pytest.mark.parametrize(("document", "field"), [
    ("- just\n- a list\n", "document"), ("name: [unclosed", "document"), ([], "document"),
    ({"name": "x", "steps": [], "owner": "me"}, "owner"), ({"steps": []}, "name"),
    ({"name": "x", "steps": []}, "steps"), ({**every_primitive(), "failure_policy": "yolo"},
                                            "failure_policy"),
])
def test_a_bad_document_is_refused_naming_the_field(document: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        compile_spec(document, AGENTS)
    assert caught.value.details == {"field": field}


def test_a_numeric_version_is_read_as_its_name() -> None:
    assert compile_spec({**every_primitive(), "version": 2}, AGENTS).version == "2"


def test_yaml_and_json_give_the_same_spec() -> None:
    import yaml

    document = every_primitive()
    assert compile_spec(yaml.safe_dump(document), AGENTS) == compile_spec(document, AGENTS)
    assert compile_spec(json.dumps(document), AGENTS) == compile_spec(document, AGENTS)


def test_map_over_takes_a_bare_expression_with_bounded_defaults() -> None:
    document = every_primitive()
    document["steps"][1]["map_over"] = "input.reviews"
    spec = compile_spec(document, AGENTS, WorkflowLimits(max_fan_out=100, max_parallelism=16))
    assert spec.step("score").map_over == MapSpec("input.reviews", 100, 16)


def test_order_puts_dependencies_first_and_ready_steps_follow_what_finished() -> None:
    spec = compile_spec(every_primitive(), AGENTS)

    assert spec.order() == ["load", "score", "mean", "check", "pause", "later", "notify"]
    assert ready_steps(spec, []) == ["load"]
    assert ready_steps(spec, ["load", "score", "mean", "check"]) == ["pause", "later"]
    assert ready_steps(spec, ["load", "score", "mean", "check", "pause"]) == ["later"]


def _refusal(document: dict[str, Any], limits: WorkflowLimits | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        compile_spec(document, AGENTS, limits)
    return caught.value


def _changed(index: int, **fields: Any) -> dict[str, Any]:
    document = copy.deepcopy(every_primitive())
    document["steps"][index].update(fields)
    return {**document, "steps": [{k: v for k, v in step.items() if v is not None}
                                  for step in document["steps"]]}


@pytest.mark.parametrize(("document", "step", "field", "words"), [
    (_changed(1, id="load"), "load", "id", "used by steps 0 and 1"),
    (_changed(1, id="bad id!"), "steps[1]", "id", "letter or digit"),
    (_changed(2, agent_type="astrologer"), "mean", "agent_type", "unknown agent type 'astrologer'"),
    (_changed(2, depends_on=["ghost"]), "mean", "depends_on", "'ghost', which does not exist"),
    (_changed(0, depends_on=["mean"]), "load", "depends_on", "load -> mean -> score -> load"),
    (_changed(2, depends_on=[]), "mean", "payload", "'score', which is not upstream"),
    (_changed(6, condition="steps.unknown.output"), "notify", "condition", "does not exist"),
    (_changed(1, depends_on=[], map_over="steps.load.output.rows"), "score", "map_over.over",
     "'load', which is not upstream"),
    (_changed(2, payload={"numbers": "${ steps.score.output[ }"}), "mean", "payload",
     "not valid JMESPath"),
    (_changed(6, condition="steps.mean.output.value >"), "notify", "condition",
     "not valid JMESPath"),
    (_changed(2, payload={"n": "${ inputs.n }"}), "mean", "payload", "'inputs' is not in the"),
    (_changed(2, payload={"n": "${ item }"}), "mean", "payload", "only a mapped step"),
    (_changed(1, map_over={"over": "input.reviews", "max_width": 5000}), "score",
     "map_over.max_width", "from 1 to 1000"),
    (_changed(1, map_over={"over": "input.reviews", "parallelism": 65}), "score",
     "map_over.parallelism", "from 1 to 64"),
    (_changed(0, timeout_s=90000), "load", "timeout_s", "at most 86400"),
    (_changed(3, approval={"on_timeout": "approve"}), "check", "approval.timeout_s", "required"),
    (_changed(3, approval={"timeout_s": 60, "on_timeout": "maybe"}), "check",
     "approval.on_timeout", "approve, reject"),
    (_changed(3, approval={"timeout_s": 7200}), "check", "approval.timeout_s", "at most 3600"),
    (_changed(2, description="add them up"), "mean", "agent_type", "not both"),
    (_changed(2, agent_type=None), "mean", "agent_type", "give agent_type or description"),
    (_changed(0, compensate="nothing"), "load", "compensate", "'nothing', which does not exist"),
    (_changed(4, timer={"wait_s": 5, "until": "2030-01-01T00:00:00Z"}), "pause", "timer",
     "exactly one"),
    (_changed(5, timer={"until": "2030-01-01T00:00:00"}), "later", "timer.until", "timezone"),
    (_changed(2, max_attempts=0), "mean", "max_attempts", "from 1 to 20"),
    (_changed(2, priority=1000), "mean", "priority", "from -100 to 100"),
    (_changed(2, retries=3), "mean", "retries", "not a known field"),
    (_changed(6, depends_on=["unload"]), "notify", "depends_on", "compensation step"),
    (_changed(3, map_over="input.reviews"), "check", "map_over", "only a task"),
    (_changed(2, payload={"all": "${ steps.*.output }"}), "mean", "payload", "name one step"),
    (_changed(2, payload={"all": "${ @ }"}), "mean", "payload", "not the whole context"),
    (_changed(1, condition="item.stars > `3`"), "score", "condition", "only a mapped step"),
])
def test_a_bad_spec_is_refused_naming_the_step_and_field(
        document: dict[str, Any], step: str, field: str, words: str) -> None:
    error = _refusal(document)
    assert error.details == {"step": step, "field": field}
    assert f"step {step!r} {field}" in error.message and words in error.message


def test_too_many_steps_and_a_looser_document_limit_are_refused() -> None:
    assert "at most 7 per run" in _refusal(every_primitive(), WorkflowLimits(max_steps=7)).message
    document = {**every_primitive(), "limits": {"max_run_duration_s": 10 ** 9}}
    assert _refusal(document).details == {"field": "limits.max_run_duration_s"}
    document = {**every_primitive(), "limits": {"max_steps": 10.5}}
    assert _refusal(document).details == {"field": "limits.max_steps"}


def test_a_step_reads_only_its_ancestors_not_unrelated_branches() -> None:
    document = {"name": "branches", "steps": [
        {"id": "a", "agent_type": "calculator", "payload": {"expression": "1+1"}},
        {"id": "b", "agent_type": "calculator", "payload": {"expression": "2+2"}},
        {"id": "c", "agent_type": "calculator", "depends_on": ["a"],
         "payload": {"numbers": ["${ steps.a.output.value }", "${ steps.b.output.value }"],
                     "operation": "sum"}}]}
    error = _refusal(document)
    assert error.details == {"step": "c", "field": "payload"} and "'b'" in error.message
    document["steps"][2]["depends_on"] = ["a", "b"]
    assert compile_spec(document, AGENTS).step("c").depends_on == ("a", "b")


def test_a_reference_reaches_through_transitive_ancestors_and_quoted_ids() -> None:
    document = {"name": "chain", "steps": [
        {"id": "load-1", "agent_type": "calculator", "payload": {}},
        {"id": "b", "agent_type": "calculator", "depends_on": ["load-1"]},
        {"id": "c", "agent_type": "calculator", "depends_on": ["b"],
         "payload": {"v": '${ steps."load-1".output.value }'}}]}
    assert compile_spec(document, AGENTS).step("c").depends_on == ("b",)


CONTEXT = {"input": {"region": "north", "limit": 2},
           "steps": {"agg": {"status": "succeeded",
                             "output": {"rows": [{"sales": 3}, {"sales": 4}]}}},
           "item": "great"}


def test_render_payload_substitutes_whole_values_and_keeps_literals() -> None:
    template = {"numbers": "${ steps.agg.output.rows[*].sales }", "text": "${item}",
                "region": "${ input.region }", "note": "cost is ${5}", "nested": [{"n": 1}],
                "missing": "${ input.absent }", "flag": True}
    assert render_payload(template, CONTEXT) == {
        "numbers": [3, 4], "text": "great", "region": "north", "note": "cost is ${5}",
        "nested": [{"n": 1}], "missing": None, "flag": True}
    assert template["numbers"] == "${ steps.agg.output.rows[*].sales }"  # not changed


@pytest.mark.parametrize(("expression", "holds"), [
    ("steps.agg.status == 'succeeded'", True),
    ("length(steps.agg.output.rows) > input.limit", False),
    ("input.region", True), ("input.absent", False), ("`[]`", False), ("`0`", True),
    ("steps.agg.output.rows[?sales > `3`]", True), ("`false`", False),
])
def test_condition_holds_follows_jmespath_truthiness(expression: str, holds: bool) -> None:
    assert condition_holds(expression, CONTEXT) is holds


def test_the_report_example_compiles_against_the_built_in_agent_types() -> None:
    from actors.agents import BUILTIN_AGENTS

    spec = compile_spec((EXAMPLES / "report.yaml").read_text(), BUILTIN_AGENTS)
    assert spec.order() == ["aggregate", "summary", "total", "notify"]
    assert [spec.step(s).agent_type for s in spec.order()] == [
        "data_processor", "text_analysis", "calculator", "communication"]


def test_the_report_example_feeds_each_agent_the_payload_it_reads() -> None:
    from actors.agents.data_processor import group_rows, input_table

    spec = compile_spec((EXAMPLES / "report.yaml").read_text(), ["data_processor", "calculator",
                                                                  "text_analysis", "communication"])
    context: dict[str, Any] = {"steps": {}, "input": {
        "rows": [{"region": "north", "sales": 120}, {"region": "south", "sales": 80},
                 {"region": "north", "sales": 30}],
        "notes": "Sales rose.", "webhook_url": "https://hooks.example.com/ymera"}}
    payload = render_payload(spec.step("aggregate").payload, context)
    aggregated = group_rows(input_table(payload), payload, limit=100)
    context["steps"]["aggregate"] = {"status": "succeeded", "output": aggregated}
    assert render_payload(spec.step("total").payload, context) == {"operation": "sum",
                                                                   "numbers": [150, 80]}
    assert condition_holds(spec.step("summary").condition or "", context)
    context["steps"]["total"] = {"status": "succeeded", "output": {"value": 230}}
    message = render_payload(spec.step("notify").payload, context)
    assert message["url"] == "https://hooks.example.com/ymera"
    assert message["message"]["total"] == 230 and len(message["message"]["by_region"]) == 2


def test_the_priority_range_is_the_task_priority_range() -> None:
    from actors.validation import PRIORITY_RANGE
    from storage import workflow_validation

    assert workflow_validation.PRIORITY_RANGE == PRIORITY_RANGE
