"""`ymera bench scale` on a small run: the report's shape and the order of events, never speed;
and its agent type, whose load must be real CPU work.

The benchmark starts and stops its own Ray, so it runs as a separate process, in the pytest
process of the tests marked `restarts_ray`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.errors import InvalidTaskInput
from cluster.bench.scale import CpuBurner
from storage.messages import AgentTask

ROOT = Path(__file__).resolve().parents[2]
TASKS_PER_STEP = 20
# Long enough on one replica (about 20 ms of CPU each) that a second replica starts and
# takes some of it before it is done, even on a slow machine.
BACKLOG = 300


def _task(payload: dict) -> AgentTask:
    return AgentTask("t1", 1, "cpu_burner", "burn", payload, 30.0)


async def test_the_burner_uses_the_cpu_time_it_is_given():
    before = time.process_time()
    assert await CpuBurner().run(_task({"burn_ms": 50})) == {"burned_ms": 50, "replica": None}
    assert time.process_time() - before >= 0.05


@pytest.mark.parametrize("burn_ms", [None, "20", True, -1, 60_001])
async def test_the_burner_rejects_a_burn_that_is_not_a_sane_number(burn_ms):
    with pytest.raises(InvalidTaskInput):
        await CpuBurner().run(_task({} if burn_ms is None else {"burn_ms": burn_ms}))


@pytest.mark.restarts_ray
def test_a_small_run_measures_each_step_and_the_autoscaled_backlog(tmp_path):
    output = tmp_path / "scale.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "bench", "scale", "--json",
         "--replica-steps", "1,2", "--tasks-per-step", str(TASKS_PER_STEP), "--burn-ms", "20",
         "--backlog", str(BACKLOG), "--health-interval", "0.2", "--downscale-delay", "1",
         "--output", str(output)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert json.loads(output.read_text()) == report

    assert report["machine"]["cpus"] >= 1 and report["machine"]["ray_cpus"] >= 2
    steps = report["throughput"]
    assert [step["replicas"] for step in steps] == [1, 2]
    for step in steps:
        assert step["succeeded"] == step["tasks"] == TASKS_PER_STEP
        assert step["seconds"] > 0 and step["tasks_per_second"] > 0
        assert sum(step["tasks_per_replica"].values()) == TASKS_PER_STEP
        assert len(step["tasks_per_replica"]) <= step["replicas"]
    assert steps[0]["speedup"] == 1.0 and steps[1]["speedup"] > 0

    scaling = report["autoscaling"]
    assert scaling["succeeded"] == scaling["backlog"] == BACKLOG
    assert scaling["health_interval_s"] == 0.2 and scaling["target_backlog"] == 1
    assert scaling["peak_desired"] == scaling["max_replicas"] == 2
    assert len(scaling["tasks_per_replica"]) == 2
    assert sum(scaling["tasks_per_replica"].values()) == BACKLOG
    assert (0 < scaling["desired_rose_s"] <= scaling["new_replica_live_s"]
            <= scaling["backlog_done_s"])
    assert scaling["desired_rose_s"] < scaling["new_replica_took_work_s"] \
        == scaling["all_new_replicas_took_work_s"] < scaling["backlog_done_s"]
    assert scaling["shrunk_to_one_after_done_s"] is not None
