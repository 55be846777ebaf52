"""Batch lines that name a workflow: each becomes a run (found relative to the batch file, read
once), bad ones are reported with their line number, runs are reported and counted by outcome,
and a re-run of the batch gets the runs it already has. The last tests run against the real
orchestrator logic in process (no Ray)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from actors.config import PoolConfig
from actors.errors import PlatformUnavailable
from actors.orchestrator import Orchestrator
from cluster.batch import runner as batch_runner
from cluster.batch.input import WorkflowFiles, read_batch
from cluster.batch.runner import BatchOptions, BatchRun
from storage.errors import InvalidRequest
from storage.messages import utcnow
from storage.workflow_records import (
    UNMAPPED,
    RunDetail,
    RunStatus,
    StepStatus,
    WorkflowRun,
    WorkflowStep,
)
from tests.support.inprocess_platform import inprocess_orchestrator

LIMIT = 2048
ECHO_YAML = """\
name: echo
version: "1"
steps:
  - id: first
    agent_type: sleeper
    payload: {echo: "${ input.n }"}
  - id: last
    agent_type: sleeper
    depends_on: [first]
    payload: {echo: "${ steps.first.output.echo }"}
"""
ECHO = {"name": "echo", "version": "1", "steps": [
    {"id": "first", "agent_type": "sleeper", "payload": {"echo": "${ input.n }"}},
    {"id": "last", "agent_type": "sleeper", "depends_on": ["first"],
     "payload": {"echo": "${ steps.first.output.echo }"}}]}


def lines_of(*values: Any) -> bytes:
    return "".join((v if isinstance(v, str) else json.dumps(v)) + "\n" for v in values).encode()


def verdicts(text: bytes, batch_file: Path | None = None):
    files = WorkflowFiles(str(batch_file)) if batch_file is not None else None
    return list(read_batch(io.BytesIO(text), batch_id="b1", tenant="acme",
                           max_payload_bytes=LIMIT, workflow_files=files))


# ------------------------------------------------------------------ reading the lines


def test_a_workflow_line_names_a_file_beside_the_batch_or_carries_the_document(tmp_path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "echo.yaml").write_text(ECHO_YAML)
    batch = tmp_path / "runs.jsonl"
    first, second, third = verdicts(lines_of(
        {"workflow": "flows/echo.yaml", "input": {"n": 1}},
        {"workflow": ECHO, "idempotency_key": "nightly-7"},
        {"workflow": str(tmp_path / "flows" / "echo.yaml")},
    ), batch)
    assert first.request is None and first.error is None and not first.skipped
    assert first.workflow.document == ECHO and first.workflow.input == {"n": 1}
    assert (first.workflow.idempotency_key, first.workflow.tenant) == ("batch:b1:1", "acme")
    assert first.workflow.source == "flows/echo.yaml"
    assert second.workflow.document == ECHO and second.workflow.input == {}
    assert second.workflow.idempotency_key == "nightly-7"
    assert third.workflow.document == ECHO


def test_a_workflow_file_is_read_once_for_all_the_lines_naming_it(tmp_path):
    (tmp_path / "echo.yaml").write_text(ECHO_YAML)
    files = WorkflowFiles(str(tmp_path / "runs.jsonl"))
    assert files.load("echo.yaml") == ECHO
    (tmp_path / "echo.yaml").unlink()
    assert files.load("echo.yaml") == ECHO


def test_bad_workflow_lines_are_reported_with_their_line_number_and_reason(tmp_path):
    (tmp_path / "list.yaml").write_text("- just\n- a list\n")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    (tmp_path / "notes.txt").write_text("name: x\n")
    found = verdicts(lines_of(
        {"workflow": "missing.yaml"},
        {"workflow": "broken.yaml"},
        {"workflow": "list.yaml"},
        {"workflow": "notes.txt"},
        {"workflow": 7},
        {"workflow": ECHO, "tenant": "other"},
        {"workflow": ECHO, "input": {"blob": "x" * (LIMIT + 1)}},
        {"workflow": ECHO, "idempotency_key": ""},
        {"workflow": ECHO, "description": "mixed"},
    ), tmp_path / "runs.jsonl")
    assert [v.number for v in found] == list(range(1, 10))
    assert all(v.workflow is None and v.request is None for v in found)
    messages = [v.error.message for v in found]
    assert messages[0].startswith("line 1: workflow missing.yaml: cannot read")
    assert messages[1].startswith("line 2: workflow broken.yaml is not valid YAML or JSON")
    assert messages[2] == "line 3: workflow list.yaml must be an object with 'name' and 'steps'"
    assert "a workflow file ends in .yaml, .yml or .json" in messages[3]
    assert messages[4] == ("line 5: workflow must be a file name or a workflow document "
                           "(an object)")
    assert messages[5].startswith("line 6: tenant is not a field of a workflow line")
    assert found[6].error.code == "payload_too_large" and "input is" in messages[6]
    assert "idempotency_key must be a non-empty string" in messages[7]
    assert messages[8].startswith("line 9: description is not a field of a workflow line")
    assert all(v.error.details["line"] == v.number for v in found)


def test_task_lines_are_unchanged_beside_workflow_lines():
    task, run, blank = verdicts(lines_of({"description": "add", "agent_type": "calculator"},
                                         {"workflow": ECHO}, ""))
    assert task.request is not None and task.workflow is None
    assert run.workflow is not None and blank.skipped


# ------------------------------------------------------------------ running them (no engine)


def run_detail(run_id: str, status: RunStatus, name: str = "echo",
               outputs: dict[str, Any] | None = None) -> RunDetail:
    now = utcnow()
    run = WorkflowRun(id=run_id, tenant="default", name=name, version="1", spec=ECHO, input={},
                      status=status, idempotency_key=None,
                      error={"code": "step_failed", "message": "first failed"}
                      if status is RunStatus.FAILED else None,
                      created_at=now, updated_at=now,
                      finished_at=now if status.is_finished else None, deadline_at=None)
    steps = tuple(WorkflowStep(run_id=run_id, step_id=step_id, map_index=UNMAPPED,
                               status=StepStatus.SUCCEEDED, task_id=f"t-{step_id}", output=out,
                               error=None, decision=None, decided_by=None, decided_at=None,
                               decision_comment=None, wake_at=None, updated_at=now)
                  for step_id, out in (outputs or {}).items())
    return RunDetail(run, steps)


class FakeRuns:
    """A backend whose runs finish on the second wait; input {"n": -1} fails the run, a
    document named `refused` is refused, and the first submission meets an unavailable
    platform."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, Any]] = []
        self.waits = 0
        self.unavailable_once = True

    async def submit_workflow_async(self, document, input=None, *, idempotency_key=None,
                                    tenant="default", wait_s=None):
        if self.unavailable_once:
            self.unavailable_once = False
            raise PlatformUnavailable("restarting")
        if document["name"] == "refused":
            raise InvalidRequest("step first agent_type: unknown agent type 'nope'",
                                 {"step": "first", "field": "agent_type"})
        self.submitted.append((idempotency_key, input))
        return run_detail(f"run-{input['n']}", RunStatus.RUNNING)

    async def wait_run_async(self, run_id, timeout_s=None, tenant="default"):
        self.waits += 1
        n = int(run_id.split("-", 1)[1])
        if n < 0:
            return run_detail(run_id, RunStatus.FAILED)
        return run_detail(run_id, RunStatus.SUCCEEDED,
                          outputs={"first": {"echo": n}, "last": {"echo": n}})


async def run_batch(backend: Any, text: bytes, batch_id: str = "b1"):
    output = io.BytesIO()
    runner = BatchRun(backend, BatchOptions(batch_id, chunk_size=4, max_in_flight=8,
                                            wait_slice_s=0.2, progress_interval_s=60),
                      output, report=lambda text: None)
    summary = await runner.run(read_batch(io.BytesIO(text), batch_id=batch_id,
                                          tenant="default", max_payload_bytes=LIMIT))
    return summary, [json.loads(line) for line in output.getvalue().splitlines()]


async def test_runs_are_reported_in_order_with_their_outcome_and_final_outputs(monkeypatch):
    monkeypatch.setattr(batch_runner, "UNAVAILABLE_RETRY_S", (0.01,))
    backend = FakeRuns()
    summary, results = await run_batch(backend, lines_of(
        {"workflow": ECHO, "input": {"n": 1}},
        {"workflow": {**ECHO, "name": "refused"}, "input": {"n": 2}},
        "",
        {"workflow": ECHO, "input": {"n": -1}},
        "not json",
        {"workflow": ECHO, "input": {"n": 5}, "idempotency_key": "mine"},
    ))
    assert [r["line"] for r in results] == [1, 2, 3, 4, 5, 6]
    assert [r["status"] for r in results] == [
        "succeeded", "invalid", "skipped", "failed", "invalid", "succeeded"]
    assert results[0]["run_id"] == "run-1" and results[0]["workflow"] == "echo"
    assert results[0]["result"] == {"last": {"echo": 1}}  # what nothing else depends on
    assert results[1]["error"]["message"] == (
        "line 2: step first agent_type: unknown agent type 'nope'")
    assert results[1]["error"]["details"] == {"step": "first", "field": "agent_type", "line": 2}
    assert results[3]["error"]["code"] == "step_failed"
    assert sorted(backend.submitted, key=str) == [
        ("batch:b1:1", {"n": 1}), ("batch:b1:4", {"n": -1}), ("mine", {"n": 5})]
    assert summary == {**summary, "lines": 6, "invalid": 2, "skipped": 1, "tasks": 0,
                       "runs": {"succeeded": 2, "failed": 1, "cancelled": 0}}


async def test_a_key_that_already_has_a_run_of_another_workflow_is_a_mismatch():
    backend = FakeRuns()
    backend.unavailable_once = False

    async def other_workflow(*args, **kwargs):
        return run_detail("run-9", RunStatus.SUCCEEDED, name="something-else")

    backend.submit_workflow_async = other_workflow  # type: ignore[method-assign]
    summary, (result,) = await run_batch(backend, lines_of({"workflow": ECHO,
                                                            "input": {"n": 1}}))
    assert result["status"] == "invalid" and result["error"]["code"] == "batch_mismatch"
    assert "run-9" in result["error"]["message"] and summary["runs"]["succeeded"] == 0


# ------------------------------------------------------------------ the real engine, in process


class Backend:
    """The in-process orchestrator as a batch sees it (tasks and runs)."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    async def submit_many_async(self, requests):
        return await self.orchestrator.submit_many(requests)

    async def wait_many_async(self, task_ids, timeout_s=None):
        return await self.orchestrator.wait_many(task_ids, timeout_s)

    async def submit_workflow_async(self, document, input=None, *, idempotency_key=None,
                                    tenant="default", wait_s=None):
        return await self.orchestrator.submit_workflow(
            document, input, idempotency_key=idempotency_key, tenant=tenant, wait_s=wait_s)

    async def wait_run_async(self, run_id, timeout_s=None, tenant="default"):
        return await self.orchestrator.wait_run(run_id, timeout_s, tenant)


@pytest.fixture
async def orchestrator(tmp_path):
    async with inprocess_orchestrator(
            tmp_path, pools={"sleeper": PoolConfig(replicas=1, concurrency=8)},
            max_payload_bytes=LIMIT) as running:
        yield running


async def test_a_batch_of_tasks_and_runs_runs_each_once_and_a_rerun_reuses_them(orchestrator,
                                                                                 tmp_path):
    (tmp_path / "echo.yaml").write_text(ECHO_YAML)
    batch = tmp_path / "mixed.jsonl"
    text = lines_of(*[{"workflow": "echo.yaml", "input": {"n": i}} if i % 2 else
                      {"description": f"t{i}", "agent_type": "sleeper", "payload": {"echo": i}}
                      for i in range(1, 9)],
                    {"workflow": {**ECHO, "steps": [{**ECHO["steps"][0],
                                                     "agent_type": "no_such_agent"}]}})

    async def run_file():
        output = io.BytesIO()
        runner = BatchRun(Backend(orchestrator),
                          BatchOptions("b1", chunk_size=3, max_in_flight=6, wait_slice_s=0.5,
                                       progress_interval_s=60), output, report=lambda t: None)
        summary = await runner.run(read_batch(
            io.BytesIO(text), batch_id="b1", tenant="default", max_payload_bytes=LIMIT,
            workflow_files=WorkflowFiles(str(batch))))
        return summary, [json.loads(line) for line in output.getvalue().splitlines()]

    summary, results = await asyncio.wait_for(run_file(), 60)
    runs = [r for r in results if r.get("run_id")]
    assert [r["line"] for r in runs] == [1, 3, 5, 7]
    assert all(r["status"] == "succeeded" for r in runs)
    assert [r["result"]["last"]["echo"] for r in runs] == [1, 3, 5, 7]
    assert summary["runs"] == {"succeeded": 4, "failed": 0, "cancelled": 0}
    assert summary["succeeded"] == 4 and summary["invalid"] == 1
    assert results[8]["status"] == "invalid" and "no_such_agent" in results[8]["error"]["message"]

    again, repeated = await asyncio.wait_for(run_file(), 60)
    assert [r.get("run_id") for r in repeated] == [r.get("run_id") for r in results]
    assert again["reused"] == 8 and again["runs"]["succeeded"] == 4
    page = await orchestrator.list_runs("default", limit=50)
    assert len(page.runs) == 4  # the re-run started no run
