"""The CLI as a new user meets it: `ymera up` on embedded defaults, tasks, status, `ymera down`.

`ymera up` starts its own Ray head (and `ymera down` stops it), so these tests run in their
own pytest process (marker `restarts_ray`), after the tests that share the session cluster.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.restarts_ray

YMERA = [sys.executable, "-m", "cluster.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    state = tmp_path_factory.mktemp("state")
    values = {**os.environ, "YMERA_STATE_DIR": str(state), "YMERA_RAY_PORT": str(free_port()),
              "YMERA_DASHBOARD_PORT": str(free_port()), "YMERA_API_PORT": str(free_port()),
              "YMERA_METRICS_PORT": str(free_port()), "YMERA_RAY_METRICS_PORT": str(free_port()),
              "YMERA_DATABASE_URL": "",
              "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    values.pop("YMERA_DATABASE_URL")
    return values


def ymera(env: dict[str, str], *args: str, check: bool = True,
          input_text: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([*YMERA, *args], env=env, capture_output=True, text=True,
                            timeout=300, input=input_text)
    if check and result.returncode != 0:
        raise AssertionError(f"ymera {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def running(env):
    up = ymera(env, "up", "--json")
    yield json.loads(up.stdout)
    ymera(env, "down", "--json", check=False)


def test_up_starts_a_local_platform_on_sqlite(running, env):
    assert running["started_ray"] is True
    assert running["ray_address"] == f"127.0.0.1:{env['YMERA_RAY_PORT']}"
    assert running["database_url"].startswith("sqlite:///")
    assert (Path(env["YMERA_STATE_DIR"]) / "ymera.db").exists()
    assert "not configured" in running["redis"]
    assert running["api_url"] == f"http://127.0.0.1:{env['YMERA_API_PORT']}"


def test_up_reports_how_long_each_phase_took(running):
    phases = running["phases"]
    assert set(phases) == {"storage", "ray_head", "ray_connect", "orchestrator", "api",
                           "pools_and_router"}
    assert all(p["took_s"] >= 0 and p["start_s"] >= 0 for p in phases.values())
    ends = [p["start_s"] + p["took_s"] for p in phases.values()]
    assert max(ends) <= running["ready_s"] + 0.05
    # independent parts overlap: storage migrates while the head starts, and the API deploys
    # while the pools start
    assert phases["storage"]["start_s"] < phases["ray_head"]["start_s"] + phases["ray_head"]["took_s"]
    assert phases["api"]["start_s"] < phases["pools_and_router"]["start_s"] + \
        phases["pools_and_router"]["took_s"]


def test_up_serves_the_http_api_to_an_admin_made_with_the_cli(running, env):
    created = ymera(env, "admin", "create-user", "--username", "root-admin", "--role", "admin",
                    "--password-stdin", input_text="a long enough password\n")
    assert "created admin root-admin" in created.stdout
    api = running["api_url"]
    assert httpx.get(f"{api}/health", timeout=10).status_code == 200
    login = httpx.post(f"{api}/api/v1/auth/token", json={
        "username": "root-admin", "password": "a long enough password"}, timeout=10)
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    task = httpx.post(f"{api}/api/v1/tasks?wait=30", headers=headers, timeout=60, json={
        "description": "what is 6 * 7", "agent_type": "calculator"})
    assert task.status_code == 200, task.text
    assert task.json()["result"]["value"] == 42
    assert httpx.get(f"{api}/api/v1/tasks", timeout=10).status_code == 401


def test_submit_wait_get_and_list(running, env):
    result = json.loads(ymera(env, "submit", "what is 2^10 + 5", "--agent-type", "calculator",
                              "--wait", "--json").stdout)
    assert result["status"] == "succeeded" and result["result"]["value"] == 1029
    detail = json.loads(ymera(env, "get", result["id"], "--json").stdout)
    assert [a["outcome"] for a in detail["attempt_history"]] == ["succeeded"]
    listed = json.loads(ymera(env, "tasks", "--json").stdout)
    assert result["id"] in [t["id"] for t in listed["tasks"]]
    text = ymera(env, "tasks").stdout
    assert result["id"] in text and "succeeded" in text


def test_errors_are_clear_and_exit_non_zero(running, env):
    bad = ymera(env, "submit", "x", "--agent-type", "nope", check=False)
    assert bad.returncode == 1 and "unknown agent_type 'nope'" in bad.stderr
    bad_json = ymera(env, "submit", "x", "--payload", "{oops", check=False)
    assert bad_json.returncode == 1 and "--payload is not valid JSON" in bad_json.stderr
    bad_setting = ymera({**env, "YMERA_QUEUE_MAX": "zero"}, "status", check=False)
    assert bad_setting.returncode == 2 and "queue_max" in bad_setting.stderr


def test_a_task_without_a_type_is_routed_and_feedback_teaches_the_router(running, env):
    routed = json.loads(ymera(env, "submit", "what is 2^10 + 5", "--wait", "--json").stdout)
    assert routed["agent_type"] == "calculator" and routed["route"]["method"] == "semantic"
    assert "route: semantic" in ymera(env, "get", routed["id"]).stdout

    refused = json.loads(ymera(env, "submit", "book me a flight to Lisbon", "--wait",
                               "--json").stdout)
    assert refused["status"] == "failed" and refused["error"]["code"] == "no_confident_route"
    taught = ymera(env, "feedback", refused["id"], "communication")
    assert "go to communication" in taught.stdout
    state = json.loads(ymera(env, "router", "--json").stdout)
    assert state["enabled"] and state["examples"]["communication"]["feedback"] == 1
    other = json.loads(ymera(env, "router", "--tenant", "globex", "--json").stdout)
    assert other["tenant"] == "globex" and "feedback" not in other["examples"]["communication"]
    again = json.loads(ymera(env, "submit", "book me a flight to Lisbon", "--payload",
                             '{"to_agent": "learning", "message": "hi"}', "--wait",
                             "--json").stdout)
    assert again["agent_type"] == "communication" and again["status"] == "succeeded"


def test_status_reports_pools_at_strength(running, env):
    status = json.loads(ymera(env, "status", "--json").stdout)
    pools = {p["agent_type"]: p for p in status["pools"]}
    assert {"calculator", "data_processor"} <= set(pools)
    assert all(p["live"] == p["desired"] for p in pools.values())
    assert status["problems"] == [] and status["metrics_address"] == (
        f"127.0.0.1:{env['YMERA_METRICS_PORT']}")
    calculator = status["agent_types"]["calculator"]
    assert "examples" not in calculator and calculator["example_count"] > 10
    text = ymera(env, "status").stdout
    assert "health: ok" in text and "calculator" in text


def test_scale_sets_autoscaling_bounds_or_pins_a_pool(running, env):
    def status_line() -> str:
        return next(line for line in ymera(env, "status").stdout.splitlines()
                    if line.strip().startswith("calculator "))

    bounds = json.loads(ymera(env, "scale", "calculator", "--min", "1", "--max", "3",
                              "--json").stdout)
    assert (bounds["min_replicas"], bounds["max_replicas"]) == (1, 3)
    assert "autoscaling 1..3" in status_line()
    refused = ymera(env, "scale", "calculator", "--min", "4", "--max", "2", check=False)
    assert refused.returncode != 0
    assert "min_replicas (4) is above max_replicas (2)" in refused.stderr + refused.stdout
    assert "calculator: pinned at 1 (set by operator)" in ymera(env, "scale", "calculator",
                                                                  "1").stdout
    assert "autoscaling" not in status_line() and "(set by operator)" in status_line()
    assert "(set by config)" in ymera(env, "scale", "calculator", "--reset").stdout
    assert "(set by operator)" not in status_line()


def test_up_serves_the_orchestrator_metrics_and_the_api_metrics(running, env):
    def scrape(port: str) -> str:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text

    samples = [s for family in text_string_to_metric_families(scrape(env["YMERA_METRICS_PORT"]))
               for s in family.samples]
    alive = [s for s in samples if s.name == "ymera_replicas_alive"
             and s.labels["agent_type"] == "calculator"]
    desired = {p["agent_type"]: p["desired"]
               for p in json.loads(ymera(env, "status", "--json").stdout)["pools"]}
    assert [s.value for s in alive] == [desired["calculator"]] and desired["calculator"] >= 1
    succeeded = [s for s in samples if s.name == "ymera_tasks_finished_total"
                 and s.labels["agent_type"] == "calculator" and s.labels["status"] == "succeeded"]
    assert sum(s.value for s in succeeded) >= 1  # the earlier tests ran calculator tasks
    assert "ray_ymera_api_requests_total{" in scrape(env["YMERA_RAY_METRICS_PORT"])


def test_down_drains_and_stops_what_up_started(env, running):
    report = json.loads(ymera(env, "down", "--json").stdout)
    assert report["ray_stopped"] is True and report["replicas_stopped"] >= 2
    again = ymera(env, "status", check=False)
    assert again.returncode != 0
