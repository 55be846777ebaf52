"""A batch as a user runs it: `ray job submit` of the batch entrypoint against a platform that
`ymera up` started (token auth on), stopped half-way with `ray job stop`, then run again with
the same batch id through `ymera batch submit`.

`ymera up` starts its own Ray head and `ymera down` runs `ray stop`, so this runs in its own
pytest process (marker `restarts_ray`). The platform is kept small (no router, no HTTP API, one
calculator and one slow `sleeper` replica) so the whole test takes about a minute.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.test_cli import free_port, ymera

pytestmark = pytest.mark.restarts_ray

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
BATCH_ID = "nightly-2026-11-21"
LINES = 500
MAX_PAYLOAD = 4096
SUCCEEDED_LINE = re.compile(r"lines done: succeeded (\d+)")


def expected(number: int) -> str:
    """What line `number` of the input is, and so what its result must say."""
    kind = number % 20
    if kind == 3:
        return "invalid_json"
    if kind == 6:
        return "no_description"
    if kind == 9:
        return "oversized"
    if kind == 12:
        return "unknown_type"
    if kind == 15:
        return "fails"
    if kind == 18:
        return "blank"
    return "slow" if number % 2 else "fast"


def input_line(number: int) -> str:
    kind = expected(number)
    if kind == "invalid_json":
        return '{"description": "add 1 and 2", "payload": {'
    if kind == "no_description":
        return json.dumps({"agent_type": "calculator", "payload": {"expression": "1+1"}})
    if kind == "oversized":
        return json.dumps({"description": "too big", "agent_type": "calculator",
                           "payload": {"blob": "x" * (MAX_PAYLOAD + 100)}})
    if kind == "unknown_type":
        return json.dumps({"description": "who?", "agent_type": "no_such_agent"})
    if kind == "fails":
        return json.dumps({"description": "divide", "agent_type": "calculator",
                           "payload": {"expression": f"{number}/0"}})
    if kind == "blank":
        return ""
    if kind == "slow":
        return json.dumps({"description": f"sleep {number}", "agent_type": "sleeper",
                           "payload": {"seconds": 0.1, "echo": number}})
    return json.dumps({"description": f"add {number}", "agent_type": "calculator",
                       "payload": {"expression": f"{number} + 1"}})


TASK_KINDS = {"slow", "fast", "fails"}
TASK_LINES = sum(1 for n in range(1, LINES + 1) if expected(n) in TASK_KINDS)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    state = tmp_path_factory.mktemp("state")
    values = {**os.environ, "YMERA_STATE_DIR": str(state), "YMERA_RAY_PORT": str(free_port()),
              "YMERA_DASHBOARD_PORT": str(free_port()), "YMERA_NUM_CPUS": "2",
              "YMERA_RAY_METRICS_PORT": str(free_port()),
              "YMERA_ROUTER_ENABLED": "false", "YMERA_API_ENABLED": "false",
              "YMERA_DEFAULT_REPLICAS": "0", "YMERA_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD),
              "YMERA_AGENT_MODULES": '["tests.support.agents:Sleeper"]',
              "YMERA_POOLS": json.dumps({"calculator": {"replicas": 1},
                                         "sleeper": {"replicas": 1, "concurrency": 2}}),
              "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "token",
              "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    values.pop("YMERA_DATABASE_URL", None)
    values.pop("YMERA_RAY_ADDRESS", None)
    return values


@pytest.fixture(scope="module")
def platform(env):
    ymera(env, "up", "--json")
    yield f"http://127.0.0.1:{env['YMERA_DASHBOARD_PORT']}"
    ymera(env, "down", "--json", check=False)


def submit_job(address: str, env: dict[str, str], arguments: list[str]
               ) -> subprocess.CompletedProcess:
    """`ray job submit` as the README gives it (the working directory uploaded, token auth from
    the environment). Ray's job server answers "No available agent" until the head node's
    dashboard agent has registered, which can take longer than its own wait on a busy machine:
    that answer (nothing was submitted) is tried again for up to a minute."""
    deadline = time.monotonic() + 60
    while True:
        submitted = subprocess.run(
            [RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT),
             *arguments], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        if (submitted.returncode == 0 or "No available agent" not in submitted.stderr
                or time.monotonic() > deadline):
            return submitted
        time.sleep(2)


def job_logs(address: str, submission_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address).get_job_logs(submission_id)


def job_status(address: str, submission_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address).get_job_status(submission_id).value


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_stopped_batch_job_resumes_without_running_anything_twice(platform, env, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join(input_line(n) for n in range(1, LINES + 1)) + "\n")
    results = tmp_path / "results.jsonl"
    entrypoint = [sys.executable, "-m", "cluster.batch", "--input", str(tasks),
                  "--output", str(results), "--batch-id", BATCH_ID, "--max-in-flight", "40",
                  "--chunk-size", "10", "--progress-interval", "0.5"]

    # The README's command: the working directory uploaded, token auth from the environment.
    first = "batch-first-run"
    submitted = submit_job(platform, env, [
        "--submission-id", first, "--metadata-json", json.dumps({"ymera_batch_id": BATCH_ID}),
        "--no-wait", "--", *entrypoint])
    assert submitted.returncode == 0, submitted.stderr

    def succeeded_so_far() -> int:
        found = SUCCEEDED_LINE.findall(job_logs(platform, first))
        return int(found[-1]) if found else 0

    wait_for(lambda: succeeded_so_far() >= 100, 120, "the first run to get under way")
    stopped = subprocess.run([RAY, "job", "stop", "--address", platform, first], env=env,
                             capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert wait_for(lambda: job_status(platform, first) in ("STOPPED", "FAILED", "SUCCEEDED")
                    and job_status(platform, first), 60, "the job to stop") == "STOPPED"
    assert not results.exists()  # a results file that exists is complete
    assert list(tmp_path.iterdir()) == [tasks]  # and a stopped job leaves no partial file
    half = json.loads(ymera(env, "batch", "status", BATCH_ID, "--json").stdout)
    assert 100 <= half["finished"] < TASK_LINES and half["total"] < TASK_LINES

    # The same batch again, through the wrapper: it picks up the rest.
    again = ymera(env, "batch", "submit", str(tasks), "--batch-id", BATCH_ID, "--output",
                  str(results), "--max-in-flight", "40", "--progress-interval", "0.5")
    summary = json.loads(again.stdout.split("batch summary: ", 1)[1].splitlines()[0])
    assert summary["lines"] == LINES and summary["reused"] >= half["finished"]

    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [line["line"] for line in lines] == list(range(1, LINES + 1))
    for line in lines:
        kind, error = expected(line["line"]), line["error"] or {}
        if kind in ("slow", "fast"):
            assert line["status"] == "succeeded" and line["attempts"] == 1, line
        elif kind == "fails":
            assert line["status"] == "failed" and line["attempts"] == 1, line
            assert "division by zero" in error["message"]
        elif kind == "blank":
            assert line["status"] == "skipped"
        else:
            assert line["status"] == "invalid" and error["details"]["line"] == line["line"]
            assert error["message"].startswith(f"line {line['line']}: ")
    assert lines[1]["result"] == {"expression": "2 + 1", "value": 3}
    assert lines[0]["result"]["echo"] == 1
    codes = {expected(line["line"]): line["error"]["code"] for line in lines
             if line["status"] == "invalid"}
    assert codes == {"invalid_json": "invalid_json", "no_description": "invalid_task",
                     "oversized": "payload_too_large", "unknown_type": "invalid_request"}
    task_ids = [line["task_id"] for line in lines if line["task_id"]]
    assert len(task_ids) == len(set(task_ids)) == TASK_LINES

    final = json.loads(ymera(env, "batch", "status", BATCH_ID, "--json").stdout)
    assert final["total"] == final["finished"] == TASK_LINES  # no line made a second task
    jobs = {job["submission_id"]: job["status"] for job in final["jobs"]}
    assert jobs[first] == "STOPPED" and "SUCCEEDED" in jobs.values() and len(jobs) == 2
