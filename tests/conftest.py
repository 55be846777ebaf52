"""Session-wide fixtures: one real local Ray cluster for every test that needs one.

Ray runs on loopback with token auth. Worker processes find the repository (and the test
agents in `tests/support/agents.py`) through PYTHONPATH, set before the cluster starts. The
example third-party agent package (`examples/ymera-example-agent`) is installed into a
directory of this session, also on that path, so its `ymera.agents` entry point registers
its agent exactly as a user's `pip install` would, without touching the environment.
"""

from __future__ import annotations

import logging
import os
import socket
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
# Ray exports metrics every 10 s by default; tests that read them want about 1 s.
os.environ["RAY_metrics_report_interval_ms"] = "1000"

TEST_NAMESPACE = "ymera-tests"
CLUSTER_CPUS = 8


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster shared by the whole test session; its node serves Ray's metrics
    (`ray.nodes()[0]["MetricsExportPort"]`) and advertises the `ml` resource, as a head
    started by `ymera up` does."""
    import ray

    # address="local": a new cluster of the tests' own, even when a platform started by
    # `ymera up` runs on this machine (a bare ray.init() would join that one)
    ray.init(address="local", num_cpus=CLUSTER_CPUS, resources={"ml": 8},
             namespace=TEST_NAMESPACE, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING",
             _metrics_export_port=free_port())
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(autouse=True)
def root_logger_restored() -> Iterator[None]:
    """Orchestrators and replicas run in this process in logic tests, and each configures the
    process's logging (`actors.logs`): every test gets the root logger back as it found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def gc_paused() -> Iterator[None]:
    """For tests that measure one thread's CPU time: a garbage collection of a long session's
    heap can spend a tenth of a second in whichever coroutine step triggers it, which is real
    CPU but not the work under test. Collect first, then hold collection off for the test."""
    import gc

    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
