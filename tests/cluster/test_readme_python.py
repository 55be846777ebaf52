"""The README's Python example, run the way a user runs it: a plain `python` process with a
clean environment (only PATH, HOME and the state directory), against a platform that `ymera up`
started on ports of its own.

`ymera up` starts its own Ray head, so these tests run in their own pytest process (marker
`restarts_ray`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.test_cli import free_port, ymera

pytestmark = pytest.mark.restarts_ray

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_snippet() -> str:
    """The Python block under "From Python" in the README, exactly as printed there."""
    section = README.read_text().split("From Python, in any driver connected to the cluster:")[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def run_as_a_user(code: str, state_dir: Path, cwd: Path, timeout_s: float = 300.0,
                  **extra: str) -> subprocess.CompletedProcess:
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"],
             "YMERA_STATE_DIR": str(state_dir), **extra}
    return subprocess.run([sys.executable, "-c", code], env=clean, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout_s)


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    env = {**os.environ, "YMERA_STATE_DIR": str(state), "YMERA_RAY_PORT": str(free_port()),
           "YMERA_DASHBOARD_PORT": str(free_port()), "YMERA_API_PORT": str(free_port()),
           "YMERA_METRICS_PORT": str(free_port()), "YMERA_RAY_METRICS_PORT": str(free_port()),
           "PYTHONPATH": str(README.parent)}
    env.pop("YMERA_DATABASE_URL", None)
    env.pop("YMERA_RAY_ADDRESS", None)
    started = json.loads(ymera(env, "up", "--json").stdout)
    yield state, started
    ymera(env, "down", "--json", check=False)


def test_the_readme_snippet_connects_from_a_clean_python_process(platform, tmp_path):
    state, _ = platform
    result = run_as_a_user(readme_snippet(), state, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # what the snippet's comments say each print shows, in order
    assert lines == ["succeeded {'operation': 'sum', 'value': 6, 'count': 3}", "1029", "1000"]


def test_without_a_running_platform_connect_fails_at_once_and_says_so(tmp_path):
    empty_state = tmp_path / "state"
    empty_state.mkdir()
    result = run_as_a_user(readme_snippet(), empty_state, tmp_path, timeout_s=45.0,
                           YMERA_RAY_PORT=str(free_port()))
    assert result.returncode == 1
    assert "PlatformUnavailable: no platform is running" in result.stderr
    assert "ymera up" in result.stderr
