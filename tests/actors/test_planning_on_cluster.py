"""`client.plan` end to end on the session's Ray cluster: the orchestrator asks the model
gateway actor, which calls a fake OpenAI-compatible server scripted with a bad plan and then a
good one; the plan is shown without running, and with `run=True` runs as a workflow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from cluster.client import Client
from ml.llm.planner import PlanRefused
from storage.workflow_records import RunStatus
from tests.support.fake_llm import FakeOpenAI, Reply
from tests.support.llm_platform import fake_openai, llm_platform

pytestmark = pytest.mark.cluster

GOOD = {"name": "bill", "version": "1", "steps": [
    {"id": "total", "agent_type": "calculator",
     "payload": {"operation": "sum", "numbers": "${ input.bills }"}}]}
UNKNOWN = {"name": "bill", "steps": [{"id": "total", "agent_type": "waiter", "payload": {}}]}
REQUEST = "add up the bills"
BILLS = {"bills": [80, 20.5]}


server = pytest.fixture(scope="module")(fake_openai)


@pytest.fixture(scope="module")
def platform(ray_cluster: None, server: FakeOpenAI, tmp_path_factory: Any) -> Iterator[Client]:
    yield from llm_platform(tmp_path_factory, server, "plan")


def test_a_refused_plan_is_asked_again_and_shown_without_running(
        platform: Client, server: FakeOpenAI) -> None:
    server.script([Reply(json.dumps(UNKNOWN), usage=(900, 40)),
                   Reply(json.dumps(GOOD), usage=(950, 35))])
    plan = platform.plan(REQUEST, input=BILLS, tenant="acme")
    assert plan["document"] == GOOD and plan["run_id"] is None
    assert plan["attempts"] == 2 and "waiter" in plan["problems"][0]
    assert "1. total [calculator]" in plan["rendered"]
    assert plan["usage"]["input_tokens"] == 1850 and plan["usage"]["models"] == ["fake-model"]
    first, second = server.requests[-2:]
    system = first.body["messages"][0]["content"]
    assert '- calculator:' in system and '"expression": "(120 + 80) * 1.2"' in system
    assert first.body["temperature"] == 0.0
    assert "waiter" in second.body["messages"][-1]["content"]
    assert platform.list_runs(tenant="acme").runs == ()


def test_run_true_starts_the_plan_as_a_workflow_run(platform: Client,
                                                    server: FakeOpenAI) -> None:
    server.script([Reply(json.dumps(GOOD))])
    plan = platform.plan(REQUEST, run=True, input=BILLS, model="chat", tenant="acme")
    assert plan["run_id"] is not None
    detail = platform.wait_run(plan["run_id"], 60, tenant="acme")
    assert detail.run.status is RunStatus.SUCCEEDED, (detail.run.error, detail.steps)
    assert detail.steps[0].output["value"] == pytest.approx(100.5)


def test_only_bad_answers_are_refused_with_their_reasons(platform: Client,
                                                          server: FakeOpenAI) -> None:
    server.script([Reply("I cannot help with that")] * 3)
    with pytest.raises(PlanRefused) as refused:
        platform.plan("something no agent does", tenant="acme")
    assert len(refused.value.details["attempts"]) == 3
