"""The `ClusterFacts` port on Ray: what an agent learns about the platform, answered by the
orchestrator actor of its namespace and by Ray's node table.

Replicas on Ray give this to their agent (`actors.agent.Agent.cluster`); nothing else in the
agent's process needs Ray for it. Every failure to answer (no orchestrator, an actor error) is
`RetryableAgentError`, so the asking task is retried rather than failed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.exceptions import RayError

from actors.errors import RetryableAgentError

ORCHESTRATOR_NAME = "orchestrator"
"""The orchestrator's actor name in its namespace (`actors.deploy` starts it under this name)."""


class RayClusterFacts:
    """Cluster facts of Ray namespace `namespace`, read on demand (nothing is cached)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    async def status(self) -> dict[str, Any]:
        return await _answer(self._orchestrator().status.remote())

    async def agent_stats(self, window_s: float, tenant: str) -> dict[str, dict[str, Any]]:
        return await _answer(self._orchestrator().agent_stats.remote(window_s, tenant))

    async def task_counts(self, tenant: str) -> dict[str, int]:
        return await _answer(self._orchestrator().task_counts.remote(tenant))

    async def nodes(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(ray.nodes)

    def _orchestrator(self) -> Any:
        try:
            return ray.get_actor(ORCHESTRATOR_NAME, namespace=self.namespace)
        except ValueError as exc:
            raise RetryableAgentError(
                f"no orchestrator is running in Ray namespace {self.namespace!r}") from exc


async def _answer(call: Any) -> Any:
    try:
        return await call
    except RayError as exc:
        raise RetryableAgentError(
            f"the orchestrator did not answer: {type(exc).__name__}: {exc}") from exc
