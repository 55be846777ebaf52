"""`ymera llm status|usage|budget`: what each asks of the orchestrator, what it prints, and
that bad arguments are refused before anything is asked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cluster import cli
from ml.llm.settings import NO_MODEL_HINT, NoModelConfigured
from tests.cluster.test_workflow_cli import orchestrator

__all__ = ["orchestrator"]  # the fixture, shared with the workflow CLI's tests

STATUS = {"configured": True, "groups": ["chat", "backup"], "default_group": "chat",
          "deployments": [
              {"name": "gpt", "group": "chat", "provider": "openai", "model": "gpt-4o-mini",
               "breaker": "closed"},
              {"name": "claude", "group": "backup", "provider": "anthropic",
               "model": "claude-haiku", "breaker": "open"}]}


def budget(limit: int | None, used: int = 1200) -> dict[str, Any]:
    return {"tenant": "acme", "limit_tokens": limit, "period": "month", "used_tokens": used,
            "reserved_tokens": 300,
            "remaining_tokens": None if limit is None else limit - used - 300}


def test_status_lists_each_deployment_with_its_breaker(orchestrator, capsys) -> None:
    orchestrator.answers["llm_status"] = STATUS
    assert cli.main(["llm", "status"]) == 0
    out = capsys.readouterr().out
    assert "default group: chat" in out
    assert "chat/gpt  openai gpt-4o-mini  breaker closed" in out
    assert "backup/claude  anthropic claude-haiku  breaker open" in out


def test_status_without_a_model_prints_the_hint(orchestrator, capsys) -> None:
    orchestrator.answers["llm_status"] = {"configured": False, "hint": NO_MODEL_HINT}
    assert cli.main(["llm", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"configured": False, "hint": NO_MODEL_HINT}


def test_usage_asks_for_the_named_tenant_and_prints_budget_and_cost(orchestrator,
                                                                    capsys) -> None:
    orchestrator.answers["llm_usage"] = {
        "tenant": "acme", "budget": budget(10_000),
        "usage": {"calls": 3, "input_tokens": 900, "output_tokens": 300, "cost_usd": 0.0123}}
    assert cli.main(["llm", "usage", "--tenant", "acme"]) == 0
    assert orchestrator.calls == [("llm_usage", ("acme",), {})]
    out = capsys.readouterr().out
    assert "1,200 of 10,000 tokens used this month (300 reserved, 8,500 left)" in out
    assert "calls: 3" in out and "cost: $0.0123" in out


def test_budget_sets_tokens_and_period(orchestrator, capsys) -> None:
    orchestrator.answers["set_llm_budget"] = budget(50_000)
    assert cli.main(["llm", "budget", "acme", "--tokens", "50000", "--period", "day",
                     "--json"]) == 0
    assert orchestrator.calls == [("set_llm_budget", ("acme", 50_000, "day"), {})]
    assert json.loads(capsys.readouterr().out)["limit_tokens"] == 50_000


def test_budget_unlimited_sends_no_limit(orchestrator, capsys) -> None:
    orchestrator.answers["set_llm_budget"] = budget(None)
    assert cli.main(["llm", "budget", "acme", "--unlimited"]) == 0
    assert orchestrator.calls == [("set_llm_budget", ("acme", None, None), {})]
    assert "budget: unlimited" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["llm", "budget", "acme"],                                  # neither --tokens nor --unlimited
    ["llm", "budget", "acme", "--tokens", "0"],
    ["llm", "budget", "acme", "--tokens", "lots"],
    ["llm", "budget", "acme", "--tokens", "5", "--unlimited"],
    ["llm", "budget", "acme", "--tokens", "5", "--period", "week"],
])
def test_bad_budget_arguments_are_refused_before_anything_is_asked(orchestrator, argv) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert orchestrator.calls == []


def test_usage_without_a_model_fails_with_the_hint(orchestrator, capsys) -> None:
    orchestrator.answers["llm_usage"] = NoModelConfigured(NO_MODEL_HINT)
    assert cli.main(["llm", "usage"]) == 1
    assert "YMERA_LLM_BASE_URL" in capsys.readouterr().err
