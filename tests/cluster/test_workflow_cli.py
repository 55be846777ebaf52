"""`ymera workflow ...` and the Python client's workflow calls: what each command asks of the
orchestrator (tenant included), what it prints, and how bad input and platform errors end.
The last tests run the commands against a real platform on the shared cluster."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from cluster import cli, cli_common
from cluster import client as client_module
from cluster.client import Client, workflow_document
from cluster.workflow_builder import Workflow
from storage.errors import Conflict, InvalidRequest, NotFound
from storage.workflow_records import (
    UNMAPPED,
    RunDetail,
    RunEvent,
    RunPage,
    RunStatus,
    StepStatus,
    WorkflowRun,
    WorkflowStep,
)

T0 = datetime(2026, 12, 4, 22, 0, tzinfo=timezone.utc)
DOCUMENT_YAML = """\
name: echo
version: "2"
steps:
  - id: first
    agent_type: sleeper
    payload: {echo: "${ input.n }"}
  - id: review
    depends_on: [first]
    approval: {timeout_s: 600}
  - id: last
    agent_type: sleeper
    depends_on: [review]
    payload: {echo: "${ steps.first.output.echo }"}
"""


def detail(status: RunStatus = RunStatus.PENDING, run_id: str = "run-1") -> RunDetail:
    run = WorkflowRun(id=run_id, tenant="acme", name="echo", version="2", spec={}, input={},
                      status=status, idempotency_key="k", error=None, created_at=T0,
                      updated_at=T0, finished_at=T0 if status.is_finished else None,
                      deadline_at=None)
    step = WorkflowStep(run_id=run_id, step_id="first", map_index=UNMAPPED,
                        status=StepStatus.SUCCEEDED, task_id="t-1", output={"echo": 1},
                        error=None, decision=None, decided_by=None, decided_at=None,
                        decision_comment=None, wake_at=None, updated_at=T0)
    return RunDetail(run, (step,))


def event(event_id: int, kind: str) -> RunEvent:
    return RunEvent(id=event_id, run_id="run-1", kind=kind, step_id=None, map_index=None, at=T0)


class RecordingOrchestrator:
    """The orchestrator's actor handle: records each call and answers with `answers[name]`
    (a value, an exception to raise, or a function of the call's arguments)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.answers: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        handle = self

        class Method:
            @staticmethod
            def remote(*args: Any, **kwargs: Any) -> Any:
                handle.calls.append((name, args, kwargs))
                answer = handle.answers[name]
                if isinstance(answer, Exception):
                    raise answer
                return answer(*args, **kwargs) if callable(answer) else answer

        return Method

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


@pytest.fixture
def orchestrator(monkeypatch: pytest.MonkeyPatch) -> RecordingOrchestrator:
    handle = RecordingOrchestrator()
    monkeypatch.setattr(client_module.ray, "get", lambda ref: ref)
    monkeypatch.setattr(cli_common, "client_of", lambda args: Client(handle))
    return handle


@pytest.fixture
def workflow_file(tmp_path: Path) -> Path:
    path = tmp_path / "echo.yaml"
    path.write_text(DOCUMENT_YAML)
    return path


# ------------------------------------------------------------------ the Python client


def test_a_workflow_may_be_given_as_a_document_text_file_builder_or_function(
        tmp_path: Path, workflow_file: Path) -> None:
    built = Workflow("echo", version="2")
    built.step("first", agent_type="sleeper", payload={"echo": built.input("n")})
    assert workflow_document({"name": "x", "steps": []}) == {"name": "x", "steps": []}
    assert workflow_document(DOCUMENT_YAML) == DOCUMENT_YAML
    assert workflow_document(workflow_file) == DOCUMENT_YAML
    assert workflow_document(str(workflow_file)) == DOCUMENT_YAML  # a one-line file name
    assert workflow_document(built) == built.document()
    assert workflow_document(lambda: built) == built.document()
    assert workflow_document(lambda: {"name": "y"}) == {"name": "y"}


@pytest.mark.parametrize("source, message", [
    (42, "not int"),
    (Path("missing.yaml"), "cannot read workflow missing.yaml"),
    (Path("notes.txt"), "ends in .yaml, .yml or .json"),
])
def test_what_is_not_a_workflow_is_refused_clearly(source: Any, message: str,
                                                   monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidRequest, match=message):
        workflow_document(source)


def test_the_client_keys_every_submission_and_names_the_decider(orchestrator) -> None:
    orchestrator.answers.update(submit_workflow=detail(), decide=detail(RunStatus.RUNNING))
    client = Client(orchestrator)
    client.submit_workflow({"name": "echo"}, {"n": 1}, tenant="acme")
    client.submit_workflow({"name": "echo"}, {"n": 1}, idempotency_key="mine", wait_s=5)
    client.approve("run-1", "review", "fine", tenant="acme")
    client.reject("run-1", "review", actor="ops:carol", map_index=3)

    (_, _, first), (_, _, second) = orchestrator.calls[:2]
    assert first["idempotency_key"].startswith("auto:") and first["tenant"] == "acme"
    assert (second["idempotency_key"], second["wait_s"]) == ("mine", 5)
    approve, reject = [args for name, args, _ in orchestrator.calls if name == "decide"]
    assert approve[:3] == ("run-1", "review", "approve") and approve[3].startswith("client:")
    assert approve[4:] == ("fine", "acme", UNMAPPED)
    assert reject == ("run-1", "review", "reject", "ops:carol", None, "default", 3)


# ------------------------------------------------------------------ the commands


def test_submit_sends_the_file_input_tenant_and_key(orchestrator, workflow_file, capsys) -> None:
    orchestrator.answers["submit_workflow"] = detail()
    assert cli.main(["workflow", "submit", str(workflow_file), "--input", '{"n": 7}',
                     "--tenant", "acme", "--idempotency-key", "nightly-1",
                     "--callback-url", "https://hooks.example.com/runs"]) == 0

    (name, args, kwargs), = orchestrator.calls
    assert name == "submit_workflow" and args == (DOCUMENT_YAML, {"n": 7})
    assert kwargs == {"idempotency_key": "nightly-1", "tenant": "acme", "wait_s": None,
                      "callback_url": "https://hooks.example.com/runs"}
    assert capsys.readouterr().out.startswith("run-1  pending  (echo v2;")


def test_submit_with_wait_shows_the_finished_run(orchestrator, workflow_file, tmp_path,
                                                 capsys) -> None:
    orchestrator.answers["submit_workflow"] = detail()
    answers = iter([detail(RunStatus.RUNNING), detail(RunStatus.SUCCEEDED)])
    orchestrator.answers["wait_run"] = lambda *args: next(answers)
    inputs = tmp_path / "input.json"
    inputs.write_text('{"n": 3}')
    assert cli.main(["workflow", "submit", str(workflow_file), "--input-file", str(inputs),
                     "--wait", "--json", "--tenant", "acme"]) == 0
    (_, args, _), first_wait, second_wait = orchestrator.calls
    assert args[1] == {"n": 3}
    assert first_wait[1][0] == "run-1" and first_wait[1][2] == "acme"
    assert 0 < first_wait[1][1] <= 2.0 and second_wait[0] == "wait_run"
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "succeeded" and shown["steps"][0]["task_id"] == "t-1"


def test_submit_with_wait_returns_when_a_person_must_decide(orchestrator, workflow_file,
                                                            capsys) -> None:
    waiting = detail(RunStatus.WAITING)
    review = dataclasses.replace(waiting.steps[0], step_id="review",
                                 status=StepStatus.AWAITING_APPROVAL, task_id=None)
    orchestrator.answers["submit_workflow"] = RunDetail(waiting.run, (review,))
    assert cli.main(["workflow", "submit", str(workflow_file), "--wait", "600"]) == 0
    assert orchestrator.names() == ["submit_workflow"]
    assert "decide: ymera workflow approve|reject run-1 review" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--input", "{n: 1}"], "--input is not valid JSON"),
    (["--input-file", "/nonexistent/input.json"], "cannot read --input-file"),
])
def test_bad_input_is_refused_before_anything_is_submitted(orchestrator, workflow_file, extra,
                                                           message, capsys) -> None:
    assert cli.main(["workflow", "submit", str(workflow_file), *extra]) == 1
    assert orchestrator.calls == []
    assert message in capsys.readouterr().err


def test_a_missing_workflow_file_is_named(orchestrator, tmp_path, capsys) -> None:
    assert cli.main(["workflow", "submit", str(tmp_path / "nope.yaml")]) == 1
    assert orchestrator.calls == []
    assert f"cannot read workflow {tmp_path / 'nope.yaml'}" in capsys.readouterr().err


def test_platform_errors_print_and_exit_1_as_text_or_json(orchestrator, capsys) -> None:
    orchestrator.answers["get_run"] = NotFound("no run run-9")
    assert cli.main(["workflow", "get", "run-9", "--tenant", "globex"]) == 1
    assert capsys.readouterr().err.strip() == "ymera: no run run-9"
    orchestrator.answers["decide"] = Conflict("step review is not awaiting approval",
                                              {"status": "succeeded"})
    assert cli.main(["workflow", "approve", "run-1", "review", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"error": {
        "code": "conflict", "message": "step review is not awaiting approval",
        "details": {"status": "succeeded"}}}
    assert orchestrator.calls[0][1] == ("run-9", "globex")


def test_approve_reject_cancel_and_retry_ask_for_what_they_say(orchestrator, capsys) -> None:
    for name in ("decide", "cancel_run", "retry_run"):
        orchestrator.answers[name] = detail(RunStatus.RUNNING)
    assert cli.main(["workflow", "approve", "run-1", "review", "--comment", "ok",
                     "--tenant", "acme"]) == 0
    assert cli.main(["workflow", "reject", "run-1", "review", "--item", "4"]) == 0
    assert cli.main(["workflow", "cancel", "run-1"]) == 0
    assert cli.main(["workflow", "retry", "run-1", "--from", "first", "--tenant", "acme"]) == 0

    approve, reject, cancel, retry = [(name, args) for name, args, _ in orchestrator.calls]
    assert approve[1][2:3] == ("approve",) and approve[1][4:] == ("ok", "acme", UNMAPPED)
    assert reject[1][2] == "reject" and reject[1][4:] == (None, "default", 4)
    assert cancel == ("cancel_run", ("run-1", "default"))
    assert retry == ("retry_run", ("run-1", "first", "acme"))
    out = capsys.readouterr().out
    assert "approved step review of run run-1" in out
    assert "retrying run run-1 from step first" in out


def test_retry_needs_a_step(orchestrator, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["workflow", "retry", "run-1"])
    assert exited.value.code == 2
    assert "--from" in capsys.readouterr().err


def test_runs_lists_a_page_and_says_how_to_get_the_next(orchestrator, capsys) -> None:
    orchestrator.answers["list_runs"] = RunPage((detail().run,), "c2")
    assert cli.main(["workflow", "runs", "--status", "waiting", "--limit", "1",
                     "--tenant", "acme"]) == 0
    assert orchestrator.calls == [("list_runs", ("acme", "waiting", 1, None), {})]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("run-1  pending    echo v2") and out[1] == "more: --cursor c2"


def test_events_follow_until_the_run_finishes_resuming_after_the_last_id(
        orchestrator, monkeypatch, capsys) -> None:
    monkeypatch.setattr("cluster.workflow_cli.FOLLOW_INTERVAL_S", 0)
    pages = iter([[event(1, "run_created"), event(2, "step_running")], [],
                  [event(3, "step_succeeded"), event(4, "run_succeeded")]])
    orchestrator.answers["run_events"] = lambda *args: next(pages)
    assert cli.main(["workflow", "events", "run-1", "--follow", "--json"]) == 0

    assert [args[1] for name, args, _ in orchestrator.calls] == [0, 2, 2]
    kinds = [json.loads(line)["kind"] for line in capsys.readouterr().out.splitlines()]
    assert kinds == ["run_created", "step_running", "step_succeeded", "run_succeeded"]


def test_following_a_run_finished_long_ago_ends(orchestrator, monkeypatch, capsys) -> None:
    orchestrator.answers.update(run_events=[], get_run=detail(RunStatus.SUCCEEDED))
    assert cli.main(["workflow", "events", "run-1", "--after", "9", "--follow"]) == 0
    assert orchestrator.names() == ["run_events", "get_run"]
    assert orchestrator.calls[0][1] == ("run-1", 9, "default")


def test_purge_is_for_every_tenant_and_takes_an_age(orchestrator, capsys) -> None:
    orchestrator.answers["purge_runs"] = 12
    assert cli.main(["workflow", "purge", "--older-than", "3600"]) == 0
    assert orchestrator.calls == [("purge_runs", (3600.0,), {})]
    assert capsys.readouterr().out.strip() == "purged 12 finished runs"
    with pytest.raises(SystemExit):
        cli.main(["workflow", "purge", "--tenant", "acme"])


@pytest.mark.parametrize("command", [
    ["submit", "f.yaml"], ["runs"], ["get", "R"], ["approve", "R", "S"], ["reject", "R", "S"],
    ["cancel", "R"], ["retry", "R", "--from", "S"], ["events", "R"]])
def test_every_workflow_command_takes_json_tenant_and_address(command: list[str]) -> None:
    args = cli.parser().parse_args(["workflow", *command, "--json", "--tenant", "acme",
                                    "--address", "h:1"])
    assert (args.json, args.tenant, args.address) == (True, "acme", "h:1")
    assert args.handler is cli_handler() and callable(args.workflow_handler)
    assert cli.parser().parse_args(["workflow", *command]).tenant == "default"


def cli_handler() -> Callable[..., None]:
    from cluster.workflow_cli import cmd_workflow

    return cmd_workflow


# ------------------------------------------------------------------ on a real platform


@pytest.fixture(scope="module")
def platform(ray_cluster, tmp_path_factory) -> Iterator[Client]:
    from tests.support.platform import run_platform

    yield from run_platform("postgresql", tmp_path_factory.mktemp("workflow-cli"))


@pytest.fixture
def on_platform(platform: Client, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setattr(cli_common, "client_of", lambda args: platform)
    return platform


def run_json(capsys, *argv: str) -> Any:
    assert cli.main([*argv, "--json"]) == 0, capsys.readouterr()
    return json.loads(capsys.readouterr().out)


@pytest.mark.cluster
def test_a_user_runs_approves_and_follows_a_workflow_from_the_cli(on_platform, workflow_file,
                                                                  capsys) -> None:
    started = time.monotonic()
    submitted = run_json(capsys, "workflow", "submit", str(workflow_file), "--input",
                         '{"n": 41}', "--wait", "60", "--idempotency-key", "cli-e2e")
    assert time.monotonic() - started < 30  # back as soon as the approval waits
    run_id = submitted["id"]
    assert submitted["status"] == "waiting"
    assert {s["step_id"]: s["status"] for s in submitted["steps"]}["review"] == (
        "awaiting_approval")
    again = run_json(capsys, "workflow", "submit", str(workflow_file), "--input", '{"n": 41}',
                     "--idempotency-key", "cli-e2e")
    assert again["id"] == run_id

    assert cli.main(["workflow", "get", run_id]) == 0
    view = capsys.readouterr().out
    assert "awaiting approval" in view and f"approve|reject {run_id} review" in view

    assert cli.main(["workflow", "approve", run_id, "review", "--comment", "looks right"]) == 0
    capsys.readouterr()
    finished = on_platform.wait_run(run_id, timeout_s=60)
    assert finished.run.status is RunStatus.SUCCEEDED
    outputs = {s.step_id: s.output for s in finished.steps}
    assert outputs["last"]["echo"] == 41

    assert cli.main(["workflow", "get", run_id]) == 0
    view = capsys.readouterr().out
    assert "succeeded" in view.splitlines()[0]
    assert "approved by client:" in view and "'looks right'" in view
    kinds = [event["kind"] for event in map(json.loads, _events(capsys, run_id))]
    assert kinds[0] == "run_created" and kinds[-1] == "run_succeeded"
    assert "step_approved" in kinds
    listed = run_json(capsys, "workflow", "runs", "--status", "succeeded")
    assert run_id in [run["id"] for run in listed["runs"]]


def _events(capsys, run_id: str) -> list[str]:
    assert cli.main(["workflow", "events", run_id, "--follow", "--json"]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.cluster
def test_another_tenant_s_run_is_not_found_and_a_bad_spec_names_its_step(
        on_platform, workflow_file, tmp_path, capsys) -> None:
    run_id = run_json(capsys, "workflow", "submit", str(workflow_file), "--input",
                      '{"n": 1}', "--tenant", "acme")["id"]
    for command in (["get", run_id], ["cancel", run_id], ["events", run_id],
                    ["approve", run_id, "review"], ["retry", run_id, "--from", "first"]):
        assert cli.main(["workflow", *command, "--tenant", "globex", "--json"]) == 1
        assert json.loads(capsys.readouterr().out)["error"]["code"] == "not_found", command
    assert cli.main(["workflow", "cancel", run_id, "--tenant", "acme"]) == 0
    assert "cancelled" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text(DOCUMENT_YAML.replace("agent_type: sleeper\n    depends_on: [review]",
                                         "agent_type: no_such_agent\n    depends_on: [review]"))
    assert cli.main(["workflow", "submit", str(bad), "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "invalid_request" and "last" in error["message"]
