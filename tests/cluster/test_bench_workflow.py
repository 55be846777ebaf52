"""`ymera bench workflow` on small sizes: the report's shape and the sanity of its figures
(every run finished right, the killed run resumed without repeating a step), never speed; and
its refusal of sizes the platform would refuse.

The benchmark starts and stops its own Ray, so it runs as a separate process, in the pytest
process of the tests marked `restarts_ray`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.bench import add_arguments
from cluster.bench.workflow import run_workflow_benchmark
from storage.errors import InvalidRequest

ROOT = Path(__file__).resolve().parents[2]
CHAIN_STEPS = 8
FAN_OUT = 60


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    add_arguments(parser)
    return parser.parse_args(["workflow", *argv])


@pytest.mark.parametrize("argv, named", [
    (["--fan-out", "1001"], "--fan-out"),
    (["--chain-steps", "1"], "--chain-steps"),
    (["--chain-steps", "201"], "--chain-steps"),
    (["--repeats", "0"], "--repeats"),
    (["--databases", "sqlite,mysql"], "--databases"),
])
def test_sizes_the_platform_would_refuse_are_refused_before_anything_starts(argv, named):
    with pytest.raises(InvalidRequest, match=named):
        run_workflow_benchmark(_args(*argv))


@pytest.mark.restarts_ray
def test_a_small_run_compares_workflows_with_plain_tasks_and_survives_a_kill(tmp_path):
    output = tmp_path / "workflow.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "bench", "workflow", "--json",
         "--chain-steps", str(CHAIN_STEPS), "--fan-out", str(FAN_OUT), "--repeats", "2",
         "--databases", "sqlite", "--output", str(output)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert json.loads(output.read_text()) == report
    assert "postgresql" not in report

    sqlite = report["sqlite"]
    chain = sqlite["chain"]
    assert chain["steps"] == CHAIN_STEPS and chain["runs"] == 2
    for side in ("plain_per_step", "chain_per_step"):
        figures = chain[side]
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
        assert 0 < figures["task_p50_ms"] <= figures["p95_ms"]
        assert figures["wall_ms"] > 0
    assert chain["overhead_per_step_p50_ms"] == round(
        chain["chain_per_step"]["p50_ms"] - chain["plain_per_step"]["p50_ms"], 1)

    fan = sqlite["fan_out"]
    assert fan["items"] == FAN_OUT and fan["parallelism"] == 64
    assert fan["fan_out"]["steps"] == FAN_OUT + 1  # each item, then the fan-in
    assert fan["batch"]["tasks"] == FAN_OUT
    assert fan["fan_out"]["per_second"] > 0 and fan["batch"]["per_second"] > 0
    assert len(fan["ratio_per_round"]) == 2 and min(fan["ratio_per_round"]) > 0
    assert fan["ratio"] == round(statistics.median(fan["ratio_per_round"]), 3)
    assert fan["ratio_of_bests"] > 0

    kill = sqlite["orchestrator_kill"]
    assert kill["restarted"] is True
    assert kill["run_status"] == "succeeded" and kill["sum_right"] is True
    assert kill["steps_started"] == CHAIN_STEPS and kill["steps_started_twice"] == []
    assert kill["steps_succeeded_at_kill"] >= CHAIN_STEPS // 2
    assert int(kill["next_step"][1:]) >= kill["steps_succeeded_at_kill"]
    assert 0 < kill["orchestrator_answers_again_s"] <= kill["run_finished_s"]
    assert 0 < kill["next_step_running_s"] <= kill["run_finished_s"]
