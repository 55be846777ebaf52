"""Session-wide fixtures: one real local Ray cluster for every test that needs one.

Ray runs on loopback with token auth; worker processes find the repository (and the test agents
in `tests/support/agents.py`) through PYTHONPATH, set before the cluster starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
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
