"""The Python builder compiles to the same spec as the equivalent JSON document."""

from __future__ import annotations

import pytest

from cluster.workflow_builder import ITEM, Workflow
from storage.errors import InvalidRequest
from storage.workflow_spec import compile_spec

AGENTS = ["data_processor", "calculator", "text_analysis", "communication"]

REPORT_DOCUMENT = {
    "name": "report", "version": "1",
    "steps": [
        {"id": "aggregate", "agent_type": "data_processor",
         "payload": {"operation": "group_by", "rows": "${input.rows}", "by": "region",
                     "aggregates": {"sales": "sum"}}, "max_attempts": 3},
        {"id": "total", "agent_type": "calculator", "depends_on": ["aggregate"],
         "payload": {"operation": "sum", "numbers": "${ steps.aggregate.output.rows[*].sales }"}},
        {"id": "score", "agent_type": "text_analysis", "depends_on": ["aggregate"],
         "map_over": {"over": "input.reviews", "max_width": 100, "parallelism": 4},
         "payload": {"operation": "sentiment", "text": "${ item }"}},
        {"id": "review", "approval": {"timeout_s": 3600, "on_timeout": "reject"},
         "depends_on": ["total"], "payload": {"total": "${ steps.total.output.value }"}},
        {"id": "notify", "agent_type": "communication", "depends_on": ["total", "score", "review"],
         "condition": "steps.total.output.value > `100`", "timer": {"wait_s": 30},
         "payload": {"url": "${ input.webhook_url }",
                     "message": {"total": "${ steps.total.output.value }",
                                 "scores": "${ steps.score.output[*].score }"}},
         "compensate": "retract"},
        {"id": "retract", "agent_type": "communication",
         "payload": {"url": "${ input.webhook_url }", "message": {"retract": True}}},
    ]}


def build_report() -> Workflow:
    wf = Workflow("report", version="1")
    aggregate = wf.step("aggregate", agent_type="data_processor", max_attempts=3, payload={
        "operation": "group_by", "rows": wf.input("rows"), "by": "region",
        "aggregates": {"sales": "sum"}})
    total = wf.step("total", agent_type="calculator", payload={
        "operation": "sum", "numbers": aggregate.output("rows[*].sales")})
    score = wf.step("score", agent_type="text_analysis", depends_on=[aggregate],
                    payload={"operation": "sentiment", "text": ITEM}
                    ).map_over(wf.input("reviews"), max_width=100, parallelism=4)
    review = wf.step("review", payload={"total": total.output("value")}).approval(3600)
    wf.step("notify", agent_type="communication", payload={
        "url": wf.input("webhook_url"),
        "message": {"total": total.output("value"), "scores": score.output("[*].score")},
    }).after(review).when("steps.total.output.value > `100`").timer(wait_s=30
                                                                     ).compensate_with("retract")
    wf.step("retract", agent_type="communication",
            payload={"url": wf.input("webhook_url"), "message": {"retract": True}})
    return wf


def test_the_builder_gives_the_same_spec_as_the_json_document() -> None:
    built = build_report().spec(AGENTS)

    assert built == compile_spec(REPORT_DOCUMENT, AGENTS)
    assert built.step("total").payload["numbers"] == "${ steps.aggregate.output.rows[*].sales }"
    # the dependencies follow from what each step reads (plus `after`)
    assert built.step("notify").depends_on == ("total", "score", "review")


def test_references_render_paths_and_quote_ids_jmespath_needs_quoted() -> None:
    wf = Workflow("quoted")
    first = wf.step("load-1", agent_type="calculator", payload={"expression": "1+1"})
    assert str(first.output("value")) == '${ steps."load-1".output.value }'
    assert str(first.output("[0]")) == '${ steps."load-1".output[0] }'
    assert str(first.output()) == '${ steps."load-1".output }'
    wf.step("next", agent_type="calculator", payload={"numbers": [first.output("value")]})
    assert wf.spec(AGENTS).step("next").depends_on == ("load-1",)


def test_a_built_workflow_is_refused_like_its_document_naming_the_step() -> None:
    wf = Workflow("bad")
    wf.step("a", agent_type="calculator").when("steps.b.output")
    with pytest.raises(InvalidRequest) as caught:
        wf.spec(AGENTS)
    assert caught.value.details == {"step": "a", "field": "condition"}

    with pytest.raises(InvalidRequest) as caught:
        wf.step("a", agent_type="calculator")
    assert caught.value.details == {"step": "a", "field": "id"}

    unknown = Workflow("unknown")
    unknown.step("x", agent_type="astrologer")
    with pytest.raises(InvalidRequest, match="unknown agent type 'astrologer'"):
        unknown.spec(AGENTS)
