"""`ymera bench batch` on a few tasks: the report's shape, never speed.

The benchmark starts and stops its own Ray (with a job server), so it runs as a separate
process, in the pytest process of the tests marked `restarts_ray`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.restarts_ray

ROOT = Path(__file__).resolve().parents[2]
TASKS = 300


def test_a_small_run_compares_a_batch_job_with_the_core_rate(tmp_path):
    output = tmp_path / "batch.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "bench", "batch", "--json", "--tasks", str(TASKS),
         "--output", str(output)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert json.loads(output.read_text()) == report

    assert len(report["rounds"]) == 2
    for round_ in report["rounds"]:
        assert round_["core"]["succeeded"] == round_["batch"]["succeeded"] == TASKS
        assert round_["batch"]["in_order"] is True
        assert 0 < round_["batch"]["job_seconds"] < round_["batch"]["end_to_end_seconds"]
    assert report["one_by_one"]["succeeded"] == report["one_by_one"]["tasks"] == TASKS
    assert report["ratio_job_to_core"] > 0 and report["ratio_end_to_end_to_core"] > 0
    assert len(report["ratio_job_to_core_per_round"]) == 2
