"""`ymera get` shows what a task and each of its attempts cost, as text and as JSON."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone

import pytest

from cluster import cli
from storage.messages import Attempt, AttemptOutcome, Task, TaskError, TaskStatus

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
TASK = Task(id="t-1", description="burn", payload={}, status=TaskStatus.SUCCEEDED,
            agent_type="calculator", tenant="default", priority=0, attempts=2, max_attempts=3,
            timeout_s=30.0, created_at=T0, updated_at=T0, result={"value": 2}, cpu_s=0.75,
            wall_s=2.5)
ATTEMPTS = [
    Attempt("t-1", 1, "agent:calculator:0", T0, AttemptOutcome.LOST, T0 + timedelta(seconds=1),
            TaskError("replica_lost", "the replica died", True), duration_s=1.0, cpu_s=None),
    Attempt("t-1", 2, "agent:calculator:1", T0, AttemptOutcome.SUCCEEDED,
            T0 + timedelta(seconds=2), duration_s=1.5, cpu_s=0.75),
]


class FakeClient:
    def get(self, task_id: str) -> Task:
        return TASK

    def attempts(self, task_id: str) -> list[Attempt]:
        return ATTEMPTS


@pytest.fixture(autouse=True)
def fake_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_client", lambda args: FakeClient())


def test_get_shows_the_cost_of_the_task_and_each_attempt(capsys) -> None:
    cli.cmd_get(argparse.Namespace(task_id="t-1", json=False))

    lines = capsys.readouterr().out.splitlines()
    assert "  cost: cpu 0.750s, wall 2.500s" in lines
    assert any(line.startswith("  attempt 1 on agent:calculator:0: lost, wall 1.000s (")
               for line in lines)
    assert "  attempt 2 on agent:calculator:1: succeeded, wall 1.500s cpu 0.750s" in lines


def test_get_as_json_carries_the_cost_fields(capsys) -> None:
    cli.cmd_get(argparse.Namespace(task_id="t-1", json=True))

    value = json.loads(capsys.readouterr().out)
    assert (value["cpu_s"], value["wall_s"]) == (0.75, 2.5)
    assert [(a["duration_s"], a["cpu_s"]) for a in value["attempt_history"]] == [
        (1.0, None), (1.5, 0.75)]


@pytest.mark.parametrize("as_json", [True, False])
def test_a_stored_task_too_deep_to_show_is_shown_with_a_marker(monkeypatch, capsys,
                                                               as_json) -> None:
    """A row written before the depth limit existed (5000 levels would break json.dumps)."""
    deep: object = 1
    for _ in range(5000):
        deep = {"a": deep}
    task = Task(id="t-2", description="old", payload=deep, status=TaskStatus.SUCCEEDED,
                agent_type="calculator", tenant="default", priority=0, attempts=1,
                max_attempts=1, timeout_s=30.0, created_at=T0, updated_at=T0, result=deep)
    monkeypatch.setattr(FakeClient, "get", lambda self, task_id: task)
    cli.cmd_get(argparse.Namespace(task_id="t-2", json=as_json))
    out = capsys.readouterr().out
    assert '"unreadable": "nested deeper than 128 levels"' in out
    if as_json:
        assert json.loads(out)["payload"] == {"unreadable": "nested deeper than 128 levels"}
