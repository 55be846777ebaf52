"""`ymera plan` and `client.plan`: what they ask of the orchestrator (tenant, run, input, model
group), what they print, and `--save` writing a document `ymera workflow submit` accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cluster import cli
from cluster.client import Client, read_workflow_file
from cluster.plan_cli import plan_text
from ml.llm.planner import PlanRefused, render_plan
from ml.llm.settings import NO_MODEL_HINT, NoModelConfigured
from storage.workflow_spec import compile_spec, spec_from_json
from tests.cluster.test_workflow_cli import orchestrator

__all__ = ["orchestrator"]  # the fixture, shared with the workflow CLI's tests

DOCUMENT = {"name": "revenue_check", "version": "1", "failure_policy": "fail_fast", "steps": [
    {"id": "by_region", "agent_type": "data_processor",
     "payload": {"operation": "group_by", "rows": "${ input.rows }", "by": ["region"],
                 "aggregates": {"revenue": "sum"}}},
    {"id": "total", "agent_type": "calculator", "depends_on": ["by_region"],
     "payload": {"operation": "sum",
                 "numbers": "${ steps.by_region.output.rows[*].revenue_sum }"}},
]}
REQUEST = "Sum the revenue per region of my rows: then the grand total.\nKeep it short."
ROWS = {"rows": [{"region": "north", "revenue": 1}]}


def answer(run_id: str | None = None, problems: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"document": DOCUMENT, "rendered": render_plan(DOCUMENT), "attempts": 1 + len(problems),
            "problems": list(problems), "run_id": run_id,
            "usage": {"calls": 1 + len(problems), "input_tokens": 900, "output_tokens": 120,
                      "cost_usd": 0.0021, "models": ["fake-model"]}}


def test_the_client_asks_as_the_tenant_with_the_model_group(orchestrator) -> None:
    orchestrator.answers["plan"] = answer()
    result = Client(orchestrator).plan("sum it", input=ROWS, model="fast", tenant="acme")
    assert result["document"] == DOCUMENT and result["run_id"] is None
    assert orchestrator.calls == [
        ("plan", ("acme", "sum it"), {"run": False, "input": ROWS, "group": "fast"})]


def test_plan_prints_the_plan_and_runs_nothing(orchestrator, capsys) -> None:
    orchestrator.answers["plan"] = answer(problems=("steps: unknown agent type 'astrologer'",))
    assert cli.main(["plan", REQUEST]) == 0
    [(name, args, kwargs)] = orchestrator.calls
    assert (name, args) == ("plan", ("default", REQUEST))
    assert kwargs == {"run": False, "input": None, "group": None}
    out = capsys.readouterr().out
    assert out.startswith("workflow revenue_check (version 1, fail_fast): 2 steps")
    assert "1. by_region [data_processor]" in out and "rows: ← input.rows" in out
    assert "refused before this plan (1):\n  - steps: unknown agent type 'astrologer'" in out
    assert "planned by fake-model in 2 call(s): 900 tokens in, 120 out, $0.0021" in out
    assert "nothing ran: add --run" in out


def test_run_starts_it_with_the_input_and_prints_the_run(orchestrator, capsys) -> None:
    orchestrator.answers["plan"] = answer(run_id="run-7")
    assert cli.main(["plan", REQUEST, "--run", "--input", json.dumps(ROWS), "--model", "big",
                     "--tenant", "acme"]) == 0
    [(_, args, kwargs)] = orchestrator.calls
    assert args == ("acme", REQUEST) and kwargs == {"run": True, "input": ROWS, "group": "big"}
    out = capsys.readouterr().out
    assert "started run run-7: follow it with `ymera workflow get run-7`" in out


def test_json_prints_the_whole_answer(orchestrator, capsys) -> None:
    orchestrator.answers["plan"] = answer()
    assert cli.main(["plan", REQUEST, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == answer()


@pytest.mark.parametrize("name", ["plan.yaml", "plan.yml", "plan.json"])
def test_save_writes_a_document_workflow_submit_accepts(orchestrator, capsys, tmp_path: Path,
                                                        name: str) -> None:
    orchestrator.answers["plan"] = answer()
    target = tmp_path / name
    assert cli.main(["plan", REQUEST, "--save", str(target), "--input", json.dumps(ROWS)]) == 0
    text = read_workflow_file(target)  # what `ymera workflow submit FILE` reads
    spec = compile_spec(text, ["data_processor", "calculator"])
    assert spec.to_json() == compile_spec(DOCUMENT, ["data_processor", "calculator"]).to_json()
    assert spec_from_json(spec.to_json()).name == "revenue_check"
    if name != "plan.json":
        assert text.startswith("# Planned by `ymera plan` from the request:\n# Sum the revenue")
        assert "# Keep it short.\n" in text
    out = capsys.readouterr().out
    assert f"saved to {target}; nothing ran" in out
    assert f"ymera workflow submit {target} --input '{json.dumps(ROWS)}'" in out


def test_save_never_overwrites_without_force_and_asks_no_model(orchestrator, capsys,
                                                               tmp_path: Path) -> None:
    orchestrator.answers["plan"] = answer()
    target = tmp_path / "mine.yaml"
    target.write_text("my edits\n")
    assert cli.main(["plan", REQUEST, "--save", str(target)]) == 1
    assert "the file exists; give --force" in capsys.readouterr().err
    assert target.read_text() == "my edits\n" and orchestrator.calls == []
    assert cli.main(["plan", REQUEST, "--save", str(tmp_path / "plan.txt")]) == 1
    assert "ends in .yaml, .yml or .json" in capsys.readouterr().err
    assert cli.main(["plan", REQUEST, "--save", str(target), "--force"]) == 0
    assert "revenue_check" in target.read_text()


def test_bad_input_json_is_refused_before_the_model_is_asked(orchestrator, capsys) -> None:
    assert cli.main(["plan", REQUEST, "--input", "{rows: 1"]) == 1
    assert "--input is not valid JSON" in capsys.readouterr().err
    assert orchestrator.calls == []


@pytest.mark.parametrize("error, printed", [
    (NoModelConfigured(NO_MODEL_HINT), "set YMERA_LLM_BASE_URL and YMERA_LLM_MODEL"),
    (PlanRefused("no valid plan after 3 attempt(s): attempt 1: cycle",
                 {"attempts": [{"attempt": 1, "problem": "cycle"}]}), "no valid plan"),
])
def test_refusals_print_their_message_and_exit_1(orchestrator, capsys, error: Exception,
                                                 printed: str) -> None:
    orchestrator.answers["plan"] = error
    assert cli.main(["plan", REQUEST]) == 1
    assert printed in capsys.readouterr().err
    assert cli.main(["plan", REQUEST, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == error.code  # type: ignore


def test_plan_text_of_a_saved_plan_without_input() -> None:
    text = plan_text({**answer(), "saved": "p.yaml"})
    assert text.endswith("`ymera workflow submit p.yaml`")
