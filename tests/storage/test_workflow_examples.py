"""The example workflows a new user starts from (examples/workflows/*.yaml and
examples/workflow_python.py).

Each compiles against the built-in agent types within the platform's default limits, the Python
example builds the same spec as report.yaml, and each example runs to the end its header
describes on an in-process orchestrator (the real engine and the built-in agents, no Ray
cluster): every payload it renders is one its agent accepts, every reference finds the output it
names, and the approval example goes both ways. Webhooks go to a receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from actors.agents import BUILTIN_AGENTS
from actors.registry import load_agent_types
from actors.config import PoolConfig
from actors.orchestrator import Orchestrator
from cluster.settings import Settings
from ml import embeddings
from storage.workflow_records import UNMAPPED, RunDetail, RunStatus, StepStatus
from storage.workflow_spec import WorkflowSpec, compile_spec, spec_from_json
from tests.support.webhooks import Receiver, serving
from tests.support.inprocess_platform import inprocess_orchestrator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "workflows"
PYTHON_EXAMPLE = ROOT / "examples" / "workflow_python.py"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
REQUIRED_EXAMPLES = {"report", "reviews_fanout", "model_approval"}
WEBHOOKS = {"webhook_secret": "example-webhook-secret-0123456789abcdef",
            "webhook_allow_private_networks": True, "webhook_timeout_s": 5.0,
            "webhook_max_attempts": 1}


def example_text(name: str) -> str:
    return (EXAMPLES / f"{name}.yaml").read_text()


def python_example() -> ModuleType:
    loaded = importlib.util.spec_from_file_location("workflow_python_example", PYTHON_EXAMPLE)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


def outputs(detail: RunDetail) -> dict[str, Any]:
    return {step.step_id: step.output for step in detail.steps if step.map_index == UNMAPPED}


def statuses(detail: RunDetail) -> dict[str, str]:
    return {step.step_id: step.status.value for step in detail.steps
            if step.map_index == UNMAPPED}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def embedder_loaded() -> None:
    """The sentence embedder text_analysis replicas share, loaded before an orchestrator starts
    them (loading it on a busy machine can outlast the orchestrator's start-up bound)."""
    embeddings.embedder()


def platform(tmp_path: Path, *agent_types: str) -> Any:
    """An in-process orchestrator with one replica of each of `agent_types` (built-in), with
    health checks patient enough for a model loading on a busy machine."""
    return inprocess_orchestrator(
        tmp_path, pools={name: PoolConfig(replicas=1) for name in agent_types},
        agent_settings=WEBHOOKS, health_interval_s=0.5, health_timeout_s=5.0)


async def awaiting(orchestrator: Orchestrator, run_id: str, step_id: str) -> RunDetail:
    for _ in range(600):
        detail = await orchestrator.get_run(run_id)
        if any(step.step_id == step_id and step.status is StepStatus.AWAITING_APPROVAL
               for step in detail.steps):
            return detail
        assert not detail.run.status.is_finished, detail.run.error
        await asyncio.sleep(0.05)
    raise AssertionError(f"{step_id} never awaited approval")


# ------------------------------------------------------------------------------ compiling

def test_the_issue_s_examples_are_all_there() -> None:
    assert {path.stem for path in EXAMPLE_FILES} >= REQUIRED_EXAMPLES


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: path.stem)
def test_example_compiles_within_the_default_platform_limits(path: Path) -> None:
    limits = Settings(_env_file=None).workflow_limits()  # type: ignore[call-arg]
    registered = load_agent_types()  # the built-ins and `knowledge`, always registered
    spec = compile_spec(path.read_text(), registered, limits)
    assert spec.name == path.stem
    assert all(step.agent_type in registered for step in spec.steps if step.is_task)
    header = path.read_text().split("\nname:")[0]
    assert "# Input:" in header, f"{path.name}: its header comment shows its input"
    assert spec_from_json(json.loads(spec.dumps())) == spec


def test_the_python_example_builds_the_report_yaml_workflow() -> None:
    built = python_example().report_workflow()
    assert built.spec(BUILTIN_AGENTS) == compile_spec(example_text("report"), BUILTIN_AGENTS)


# ------------------------------------------------------------------------------- running

async def test_the_python_report_runs_and_posts_its_webhook(
        tmp_path: Path, receiver: Receiver, embedder_loaded: None) -> None:
    module = python_example()
    run_input = {**module.SAMPLE_INPUT, "webhook_url": receiver.url}
    async with platform(tmp_path, "data_processor", "calculator", "text_analysis",
                        "communication") as orchestrator:
        detail = await orchestrator.submit_workflow(module.report_workflow().document(),
                                                    run_input, wait_s=60)
        assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
        result = outputs(detail)
        by_region = {row["region"]: row["sales"] for row in result["aggregate"]["rows"]}
        assert by_region == {"east": 230, "north": 165.5, "south": pytest.approx(99.99)}
        assert result["total"]["value"] == pytest.approx(495.49)
        assert len(result["summary"]["sentences"]) == 2
        assert receiver.bodies == [{"report": "sales", "total": result["total"]["value"],
                                    "by_region": result["aggregate"]["rows"],
                                    "summary": result["summary"]["summary"]}]

        without_notes = {key: value for key, value in run_input.items() if key != "notes"}
        detail = await orchestrator.submit_workflow(example_text("report"), without_notes,
                                                    wait_s=60)
        assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
        assert statuses(detail)["summary"] == "skipped"
        assert receiver.bodies[-1]["summary"] is None


async def test_the_review_fan_out_scores_every_review_then_aggregates(
        tmp_path: Path, embedder_loaded: None) -> None:
    reviews = [{"id": "r1", "text": "Great battery life, I love it."},
               {"id": "r2", "text": "The screen broke after a week. Terrible."},
               {"id": "r3", "text": "Excellent value and fast delivery."},
               {"id": "r4", "text": "It arrived on Tuesday."}]
    async with platform(tmp_path, "text_analysis", "data_processor",
                        "calculator") as orchestrator:
        detail = await orchestrator.submit_workflow(
            example_text("reviews_fanout"), {"reviews": reviews}, wait_s=60)
    assert detail.run.status is RunStatus.SUCCEEDED, detail.run.error
    items = [step for step in detail.steps if step.step_id == "sentiment"
             and step.map_index != UNMAPPED]
    assert len(items) == 4
    result = outputs(detail)
    scores = result["sentiment"]
    assert [item["label"] for item in scores] == ["positive", "negative", "positive", "neutral"]
    counts = {row["label"]: row["reviews"] for row in result["by_label"]["rows"]}
    assert counts == {"negative": 1, "neutral": 1, "positive": 2}
    assert result["average"]["value"] == pytest.approx(
        sum(item["score"] for item in scores) / 4, abs=1e-3)


def houses() -> list[dict[str, Any]]:
    return [{"size_m2": size, "rooms": 1 + size // 30, "district": district,
             "price": 3000 * size + (40_000 if district == "centre" else 0)}
            for size in range(35, 155, 10) for district in ("centre", "north")]


async def test_a_model_is_announced_once_approved_and_not_when_rejected(
        tmp_path: Path, receiver: Receiver) -> None:
    run_input = {"rows": houses(), "target": "price", "webhook_url": receiver.url}
    async with platform(tmp_path, "learning", "communication") as orchestrator:
        approved = await orchestrator.submit_workflow(example_text("model_approval"), run_input)
        rejected = await orchestrator.submit_workflow(example_text("model_approval"), run_input,
                                                      idempotency_key="second")
        shown = await awaiting(orchestrator, approved.run.id, "review")
        fit = outputs(shown)["fit"]
        assert fit["task"] == "regression" and fit["rows_used"] == 24
        assert receiver.bodies == []  # nothing is announced before a person decides

        await orchestrator.decide(approved.run.id, "review", "approve", "alice",
                                  "r2 looks right")
        approved = await orchestrator.wait_run(approved.run.id, 60)
        assert approved.run.status is RunStatus.SUCCEEDED, approved.run.error
        (posted,) = receiver.bodies
        assert posted == {"event": "model_approved", "model": fit["model"], "target": "price",
                          "evaluation": fit["evaluation"], "approved_by": "alice",
                          "comment": "r2 looks right"}
        assert statuses(approved)["announce_rejection"] != "succeeded"

        await awaiting(orchestrator, rejected.run.id, "review")
        await orchestrator.decide(rejected.run.id, "review", "reject", "bob", "overfits")
        rejected = await orchestrator.wait_run(rejected.run.id, 60)
    assert rejected.run.status is RunStatus.FAILED
    steps = statuses(rejected)
    assert steps["review"] == "failed" and steps["announce"] == "cancelled"
    assert steps["announce_rejection"] == "succeeded"
    assert receiver.bodies[1:] == [{"event": "model_not_deployed",
                                    "model": outputs(rejected)["fit"]["model"],
                                    "target": "price"}]
