"""`ymera route` in-process: one decision, evaluation on labelled data, calibration stored
in the state directory and used by the next run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cluster.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("YMERA_STATE_DIR", str(tmp_path))
    return tmp_path


def run_json(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_route_explains_a_confident_decision_and_refuses_out_of_scope(state, capsys):
    decision = run_json(capsys, "route", "multiply 12 by 7 please")
    assert decision["routed"] and decision["agent_type"] == "calculator"
    assert decision["explanation"] and decision["candidates"][0][0] == "calculator"
    refused = run_json(capsys, "route", "book me a flight to Paris next Tuesday")
    assert refused["routed"] is False


def test_calibrate_stores_thresholds_that_evaluation_then_uses(state, capsys):
    fitted = run_json(capsys, "route", "--calibrate", str(DATA / "routing_dev.jsonl"))
    stored = json.loads((state / "router-policy.json").read_text())
    assert stored == {"min_similarity": fitted["min_similarity"],
                      "min_confidence": fitted["min_confidence"]}
    report = run_json(capsys, "route", "--eval", str(DATA / "routing_holdout.jsonl"))
    # The quality bar itself (0.90 on the holdout, built-in types only) is tested in
    # tests/ml; here the session's example `word_counter` agent also competes for text tasks.
    assert report["accuracy"] >= 0.85 and report["policy"]["min_similarity"] == (
        fitted["min_similarity"])
    assert report["confusion"]["none"]["none"] > 0


def test_bad_files_are_clear_errors(state, capsys, tmp_path):
    assert main(["route", "--eval", str(tmp_path / "missing.jsonl")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert main(["route", "--eval", str(bad)]) == 1
    assert "is not labelled JSON Lines" in capsys.readouterr().err


def test_evaluation_reports_the_baselines_in_the_same_run(state, capsys):
    fitted = run_json(capsys, "route", "--calibrate", str(DATA / "routing_dev.jsonl"))
    centroid = fitted["baselines"]["nearest_centroid"]
    report = run_json(capsys, "route", "--eval", str(DATA / "routing_holdout.jsonl"))
    baseline = report["baselines"]["nearest_centroid"]
    assert baseline["lines"] == report["lines"] and "accuracy" in report
    assert baseline["policy"]["min_similarity"] == centroid["min_similarity"]
    assert main(["route", "--eval", str(DATA / "routing_holdout.jsonl")]) == 0
    assert "baselines, on the same encoder and texts:\nnearest_centroid:" in (
        capsys.readouterr().out)


def test_the_library_comparison_names_its_optional_extra(state, capsys):
    if importlib.util.find_spec("semantic_router") is not None:
        pytest.skip("the semantic-router library is installed")
    assert main(["route", "--eval", str(DATA / "routing_dev.jsonl"),
                 "--compare-semantic-router"]) == 1
    assert "pip install 'ymera[compare-router]'" in capsys.readouterr().err


@pytest.mark.parametrize("description, message", [
    ("", "non-empty"), ("   ", "non-empty"), ("x" * 10_001, "10001 characters; the limit is")])
def test_route_refuses_an_empty_or_huge_description(state, capsys, description, message):
    assert main(["route", description]) == 1
    assert message in capsys.readouterr().err
