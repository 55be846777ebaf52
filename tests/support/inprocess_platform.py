"""An orchestrator in this process, on a fresh SQLite database, with replicas that are plain
objects (`InProcessBackend`): for logic tests that need no Ray cluster.

    async with inprocess_orchestrator(tmp_path, pools={"sleeper": PoolConfig(replicas=1)}) as o:
        ...

`database_url` puts it on another database (say a PostgreSQL server of the test's own).

Defaults suit tests: the test agents, no replicas unless `pools` asks, fast health checks and
retries, routing off. Afterwards the orchestrator drains (5 s at most), every coroutine of it
stops and its storage is closed (`vanish`).
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
async def inprocess_orchestrator(tmp_path: Path, database_url: str | None = None,
                                 **overrides: Any) -> AsyncIterator[Orchestrator]:
    """An orchestrator on `database_url` (migrated here), else on a fresh SQLite file."""
    url = database_url or f"sqlite:///{tmp_path}/ymera.db"
    await migrate_async(url)
    backend = InProcessBackend()
    orchestrator = await started(config_for_tests(url, **overrides), backend)
    try:
        yield orchestrator
    finally:
        await orchestrator.drain(5)
        await vanish(orchestrator)


async def started(config: OrchestratorConfig, backend: InProcessBackend) -> Orchestrator:
    orchestrator = Orchestrator(config, backend=backend)
    await asyncio.wait_for(orchestrator.ready(), 10)
    orchestrator.test_backend = backend
    return orchestrator


async def restarted(orchestrator: Orchestrator) -> Orchestrator:
    """The orchestrator that takes over when this one's process is gone: the same
    configuration, database and replicas (the caller drains and vanishes it)."""
    await vanish(orchestrator)
    return await started(orchestrator.config, orchestrator.test_backend)


async def vanish(orchestrator: Orchestrator, timeout_s: float = 10.0) -> None:
    """Stop every coroutine of an orchestrator and close its storage, as if its process were
    gone (nothing more is drained or committed).

    It waits for the cancelled coroutines to end before closing anything. A coroutine cancelled
    in the middle of a query closes its database connection as it unwinds; cancelled a second
    time there (as a test's event loop does to every task left when it closes), SQLAlchemy
    stops aiosqlite's thread under the graceful close, which then waits forever."""
    for timer in orchestrator.workflows._timers.values():  # a gone process wakes nothing
        timer.cancel()
    orchestrator.workflows.store = None  # and its engine advances nothing
    tasks = [*orchestrator._background, *orchestrator.pools._background]
    lifecycle = getattr(orchestrator, "lifecycle", None)
    if lifecycle is not None:
        tasks += [t for t in (lifecycle.writer._task, lifecycle.key_lookup._drainer) if t]
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=timeout_s) if tasks else (set(), set())
    orchestrator.metrics.close()
    if pending:
        raise AssertionError(f"still running {timeout_s}s after being cancelled: "
                             f"{sorted(t.get_name() for t in pending)}")
    if lifecycle is not None:
        await lifecycle.store.close()
    if orchestrator.publisher is not None:
        await orchestrator.publisher.close()
