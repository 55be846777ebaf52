"""`ymera bench api` on a few requests: the report's shape, never speed.

The benchmark starts and stops its own Ray, so it runs as a separate process, in the pytest
process of the tests marked `restarts_ray`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.bench.api import concurrency_levels, summary
from storage.errors import InvalidRequest

ROOT = Path(__file__).resolve().parents[2]


def test_concurrency_levels_are_positive_integers():
    assert concurrency_levels("1,8,32") == (1, 8, 32)
    assert concurrency_levels(" 4 ") == (4,)
    for text in ("", "0,8", "one", "2,-1"):
        with pytest.raises(InvalidRequest):
            concurrency_levels(text)


@pytest.mark.restarts_ray
def test_a_small_run_reports_both_endpoints_at_each_level(tmp_path):
    output = tmp_path / "api.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "bench", "api", "--json", "--concurrency", "1,2",
         "--requests", "10", "--output", str(output)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert json.loads(output.read_text()) == report

    assert report["suite"] == "api" and report["serve"]["host"] == "127.0.0.1"
    assert [level["concurrency"] for level in report["levels"]] == [1, 2]
    for level in report["levels"]:
        for side in (level["bare"], level["platform"]):
            assert side["requests"] == 10 and side["ok"] == 10 and side["errors"] == 0
            assert side["requests_per_second"] > 0
            assert 0 < side["p50_ms"] <= side["p95_ms"] <= side["p99_ms"]
        assert level["ratio"] > 0 and isinstance(level["meets_ratio_goal"], bool)
    assert isinstance(report["goals"]["ratio"]["met"], bool)
    assert report["goals"]["p95"]["met"] is None  # 32 concurrent callers were not measured
    assert report["goals"]["p95_vs_bare"]["met"] is None
    assert "platform" in summary(report)


def test_the_p95_goal_against_bare_compares_the_same_runs_level_of_32():
    from cluster.bench.api import goals

    def level(concurrency: int, bare_p95: float, platform_p95: float) -> dict:
        return {"concurrency": concurrency, "ratio": 0.5, "meets_ratio_goal": False,
                "bare": {"p95_ms": bare_p95}, "platform": {"p95_ms": platform_p95}}

    within = goals([level(1, 4.0, 40.0), level(32, 100.0, 150.0)])["p95_vs_bare"]
    beyond = goals([level(32, 100.0, 151.0)])["p95_vs_bare"]
    assert (within["ratio"], within["met"]) == (1.5, True)
    assert (beyond["ratio"], beyond["met"]) == (1.51, False)
