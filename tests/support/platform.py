"""Starting an orchestrator (with its pools) on the shared test cluster, on a real database."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from actors.config import OrchestratorConfig, PoolConfig
from actors.deploy import start_orchestrator
from actors.registry import load_agent_types
from actors.retry import RetryPolicy
from cluster.client import Client
from ml.config import RouterConfig
from storage.database import migrate
from tests.support.agents import TEST_AGENT_PATHS
from tests.support.databases import database_url_fixture

FAST = dict(
    router=RouterConfig(enabled=False),
    health_interval_s=0.5,
    health_timeout_s=3.0,
    default_timeout_s=20.0,
    retry=RetryPolicy(max_attempts=3, backoff_base_s=0.05, backoff_max_s=0.5, jitter=0.5),
)


# Pools the lifecycle and failure tests use; every other agent type (including the heavy ones
# that load torch or scikit-learn) gets no replica unless a test asks, so platforms start fast.
USED_POOLS = {"calculator": PoolConfig(replicas=1), "data_processor": PoolConfig(replicas=1),
              "sleeper": PoolConfig(replicas=2), "flaky": PoolConfig(replicas=1),
              "hanger": PoolConfig(replicas=2, concurrency=1)}


def test_config(database_url: str, **overrides: Any) -> OrchestratorConfig:
    pools = {name: PoolConfig(replicas=0) for name in load_agent_types(TEST_AGENT_PATHS)}
    pools.update(USED_POOLS)
    pools.update(overrides.pop("pools", {}))
    values = dict(database_url=database_url, namespace=f"ymera-test-{uuid.uuid4().hex[:8]}",
                  agent_modules=TEST_AGENT_PATHS, pools=pools, **FAST)
    values.update(overrides)
    return OrchestratorConfig(**values)


def run_platform(kind: str, tmp_path: Path, **overrides: Any) -> Iterator[Client]:
    """An orchestrator on a fresh `kind` database; stopped with all its replicas afterwards."""
    for url in database_url_fixture(kind, tmp_path):
        migrate(url)
        config = test_config(url, **overrides)
        orchestrator = start_orchestrator(config)
        ray.get(orchestrator.ready.remote(), timeout=300)
        client = Client(orchestrator)
        client.config = config
        try:
            yield client
        finally:
            ray.get(orchestrator.stop_pools.remote(), timeout=60)
            ray.kill(orchestrator, no_restart=True)
            _wait_no_actors(config.namespace)


def _wait_no_actors(namespace: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = [a for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == namespace]
        if not names:
            return
        time.sleep(0.2)


def wait_until(predicate, timeout_s: float = 30.0, interval_s: float = 0.1, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
