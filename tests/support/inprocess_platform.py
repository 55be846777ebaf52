"""An orchestrator in this process, on a fresh SQLite database, with replicas that are plain
objects (`InProcessBackend`): for logic tests that need no Ray cluster.

    async with inprocess_orchestrator(tmp_path, pools={"sleeper": PoolConfig(replicas=1)}) as o:
        ...

Defaults suit tests: the test agents, no replicas unless `pools` asks, fast health checks and
retries, routing off. Afterwards the orchestrator drains (5 s at most) and every coroutine of
it stops (`vanish`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from actors.config import OrchestratorConfig
from actors.orchestrator import Orchestrator
from actors.retry import RetryPolicy
from ml.config import RouterConfig
from storage.database import migrate_async
from tests.support.agents import TEST_AGENT_PATHS
from tests.support.inprocess_backend import InProcessBackend


def config_for_tests(database_url: str, **overrides: Any) -> OrchestratorConfig:
    values: dict[str, Any] = dict(
        database_url=database_url, agent_modules=TEST_AGENT_PATHS, default_replicas=0,
        health_interval_s=0.05, health_timeout_s=0.5,
        retry=RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05),
        router=RouterConfig(enabled=False))
    values.update(overrides)
    return OrchestratorConfig(**values)


@contextlib.asynccontextmanager
async def inprocess_orchestrator(tmp_path: Path, **overrides: Any
                                 ) -> AsyncIterator[Orchestrator]:
    url = f"sqlite:///{tmp_path}/ymera.db"
    await migrate_async(url)
    backend = InProcessBackend()
    orchestrator = Orchestrator(config_for_tests(url, **overrides), backend=backend)
    await asyncio.wait_for(orchestrator.ready(), 10)
    orchestrator.test_backend = backend
    try:
        yield orchestrator
    finally:
        await orchestrator.drain(5)
        await orchestrator.lifecycle.store.close()
        if orchestrator.publisher is not None:
            await orchestrator.publisher.close()
        vanish(orchestrator)


def vanish(orchestrator: Orchestrator) -> None:
    """Stop every coroutine of an orchestrator, as if its process were gone."""
    for task in list(orchestrator._background):
        task.cancel()
    orchestrator.metrics.close()
    if orchestrator.lifecycle.writer._task:
        orchestrator.lifecycle.writer._task.cancel()
