"""Session-wide fixtures: one real local Ray cluster for every test that needs one.

Ray runs on loopback with token auth. Worker processes find the repository (and the test
agents in `tests/support/agents.py`) through PYTHONPATH, set before the cluster starts. The
example third-party agent package (`examples/ymera-example-agent`) is installed into a
directory of this session, also on that path, so its `ymera.agents` entry point registers
its agent exactly as a user's `pip install` would, without touching the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_AGENT_PACKAGE = ROOT / "examples" / "ymera-example-agent"
EXAMPLE_AGENT_SITE = Path(tempfile.mkdtemp(prefix="ymera-example-agent-"))


def _install_example_agent() -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(EXAMPLE_AGENT_SITE),
         str(EXAMPLE_AGENT_PACKAGE)],
        check=True, capture_output=True, timeout=300)
    sys.path.append(str(EXAMPLE_AGENT_SITE))


if EXAMPLE_AGENT_PACKAGE.exists():
    _install_example_agent()
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH"), str(EXAMPLE_AGENT_SITE)) if p)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

TEST_NAMESPACE = "ymera-tests"
CLUSTER_CPUS = 8


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster shared by the whole test session."""
    import ray

    ray.init(num_cpus=CLUSTER_CPUS, namespace=TEST_NAMESPACE, include_dashboard=False,
             log_to_driver=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()
