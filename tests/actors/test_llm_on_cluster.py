"""The `llm` agent on the session's Ray cluster, through a platform configured with a fake
OpenAI-compatible endpoint: routed work, streamed output on the task's events, usage and cost
on the task, and no `llm` type where no model is configured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.exceptions import RayTaskError

from actors.config import PoolConfig
from cluster.client import Client
from ml.config import RouterConfig
from ml.llm.settings import NO_MODEL_HINT
from storage.messages import TaskStatus
from tests.support.fake_llm import FakeOpenAI, Fault, Reply
from tests.support.inprocess_platform import inprocess_orchestrator
from tests.support.llm_platform import fake_openai, llm_platform

pytestmark = pytest.mark.cluster

PRICES = {"input_price_per_mtok": 2.0, "output_price_per_mtok": 8.0}  # US$ per million tokens


server = pytest.fixture(scope="module")(fake_openai)


@pytest.fixture(scope="module")
def platform(ray_cluster: None, server: FakeOpenAI, tmp_path_factory: Any) -> Iterator[Client]:
    yield from llm_platform(tmp_path_factory, server, "llm", PRICES, router=RouterConfig(),
                            pools={"llm": PoolConfig(replicas=1)})


def test_a_translation_submitted_in_words_is_routed_to_llm_with_its_usage_and_cost(
        platform: Client, server: FakeOpenAI) -> None:
    server.script([Reply("Bonjour", usage=(12, 3))])
    task_id = platform.submit("translate 'good morning' into French")
    task = platform.wait(task_id, 60)
    assert task.status is TaskStatus.SUCCEEDED, task.error
    assert task.agent_type == "llm" and task.route["method"] == "semantic"
    assert task.result["text"] == "Bonjour" and task.result["model"] == "fake-model"
    cost = (12 * 2.0 + 3 * 8.0) / 1_000_000
    assert task.result["cost_usd"] == pytest.approx(cost)
    shown = platform.get(task_id)
    assert shown.llm_usage == {"input_tokens": 12, "output_tokens": 3,
                               "cost_usd": pytest.approx(cost), "calls": 1}
    assert shown.to_json()["llm_usage"]["calls"] == 1
    [request] = [r for r in server.requests if "good morning" in str(r.body)]
    assert request.body["messages"][-1]["content"] == "translate 'good morning' into French"


def test_a_streamed_answer_reaches_the_task_events_before_it_succeeds(
        platform: Client, server: FakeOpenAI) -> None:
    text = "Bonjour tout le monde, et bonne journée"
    server.script([Reply(text, usage=(8, 9), chunk_delay_s=0.06)])
    task_id = platform.submit("greet everyone in French", {"stream": True}, agent_type="llm")
    task = platform.wait(task_id, 60)
    assert task.status is TaskStatus.SUCCEEDED, task.error
    events = platform.events(task_id)
    kinds = [event.kind for event in events]
    deltas = [event for event in events if event.kind == "output_delta"]
    assert len(deltas) > 1  # streamed as it was written, not in one piece at the end
    assert [d.data["index"] for d in deltas] == list(range(len(deltas)))
    assert "".join(d.data["text"] for d in deltas) == task.result["text"] == text
    assert {d.attempt for d in deltas} == {1}
    assert kinds.index("started") < kinds.index("output_delta")
    assert kinds[-1] == "succeeded"


def test_a_stream_cut_mid_answer_shows_an_error_event_and_the_retry_streams_again(
        platform: Client, server: FakeOpenAI) -> None:
    server.script([Fault.cut_after(2, Reply("one two three four")), Reply("one two three")])
    task_id = platform.submit("count to three", {"stream": True}, agent_type="llm")
    task = platform.wait(task_id, 60)
    assert task.status is TaskStatus.SUCCEEDED and task.attempts == 2, task.error
    events = platform.events(task_id)
    errors = [e for e in events if e.kind == "output_error"]
    assert [e.attempt for e in errors] == [1]
    second = [e.data["text"] for e in events if e.kind == "output_delta" and e.attempt == 2]
    assert "".join(second) == task.result["text"] == "one two three"


def test_output_is_recorded_only_for_the_running_attempt(platform: Client) -> None:
    finished = platform.wait(platform.submit("2 + 2", {"expression": "2 + 2"},
                                             agent_type="calculator"), 60)
    orchestrator = platform.orchestrator
    assert ray.get(orchestrator.task_output.remote(
        finished.id, 1, "output_delta", {"text": "late", "index": 0})) is False
    assert "output_delta" not in [e.kind for e in platform.events(finished.id)]
    with pytest.raises(RayTaskError, match="output event kind 'result'"):
        ray.get(orchestrator.task_output.remote(finished.id, 1, "result", {}))


def test_status_shows_the_model_groups(platform: Client) -> None:
    status = platform.status()
    assert "llm" in status["agent_types"]
    assert status["llm"] == {"configured": True, "default_group": "chat", "groups": {
        "chat": [{"name": "primary", "provider": "openai", "model": "fake-model"}]}}


async def test_a_platform_without_a_model_has_no_llm_type_and_says_how_to_add_one(
        tmp_path: Path) -> None:
    async with inprocess_orchestrator(tmp_path) as orchestrator:
        status = await orchestrator.status()
    assert "llm" not in status["agent_types"]
    assert status["llm"] == {"configured": False, "hint": NO_MODEL_HINT}


def test_gateway_status_usage_and_budgets_through_the_client(platform: Client,
                                                             server: FakeOpenAI) -> None:
    status = platform.llm_status()
    assert status["configured"] and status["default_group"] == "chat"
    assert [(d["name"], d["breaker"]) for d in status["deployments"]] == [("primary", "closed")]

    # a tenant whose budget cannot cover one call: refused before the model is asked, not retried
    platform.set_llm_budget("llm-poor", 50)
    asked = len(server.requests)
    task = platform.wait(platform.submit("say hello in Italian", {"max_tokens": 200},
                                         agent_type="llm", tenant="llm-poor"), 60)
    assert task.status is TaskStatus.FAILED and task.attempts == 1
    assert "budget" in task.error.message.lower()
    assert len(server.requests) == asked
    poor = platform.llm_usage("llm-poor")
    assert poor["budget"]["limit_tokens"] == 50 and poor["budget"]["used_tokens"] == 0
    assert poor["usage"]["calls"] == 0

    # a tenant with room: its call is counted against its own budget only
    platform.set_llm_budget("llm-rich", 100_000, "day")
    server.script([Reply("Ciao", usage=(20, 2))])
    done = platform.wait(platform.submit("say hello in Italian", agent_type="llm",
                                         tenant="llm-rich"), 60)
    assert done.status is TaskStatus.SUCCEEDED, done.error
    rich = platform.llm_usage("llm-rich")
    assert rich["budget"]["period"] == "day" and rich["budget"]["used_tokens"] == 22
    assert (rich["usage"]["calls"], rich["usage"]["input_tokens"]) == (1, 20)
    assert platform.llm_usage("llm-poor")["usage"]["calls"] == 0


def test_the_python_example_runs_against_the_platform(platform: Client, server: FakeOpenAI,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "llm_example", Path(__file__).parents[2] / "examples" / "llm_python.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setattr(example.Client, "connect", classmethod(lambda cls: platform))
    server.script([
        Reply("Bonjour"), Reply("billing"),
        Reply('{"number": 4417, "total": 1250.0, "currency": "EUR"}'),
        Reply("Welcome aboard! We are glad you are here.", usage=(10, 9), chunk_delay_s=0.05),
    ])
    example.main()
    out = capsys.readouterr().out
    assert "translation: Bonjour" in out and "label: billing" in out
    assert "invoice: {'number': 4417, 'total': 1250.0, 'currency': 'EUR'}" in out
    assert "Welcome aboard! We are glad you are here.\n" in out
    assert "'output_tokens': 9" in out
