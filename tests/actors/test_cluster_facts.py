"""The cluster-facts port on Ray: the orchestrator's answers passed through, and every way it
cannot answer made a retryable agent error (the asking task is retried, not failed)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import ray
from ray.exceptions import RayActorError

from actors.cluster_facts import ORCHESTRATOR_NAME, RayClusterFacts
from actors.errors import RetryableAgentError


class RemoteMethod:
    def __init__(self, answer: Any = None, error: Exception | None = None) -> None:
        self.answer, self.error = answer, error
        self.calls: list[tuple[Any, ...]] = []

    def remote(self, *args: Any) -> Any:
        self.calls.append(args)

        async def reply() -> Any:
            if self.error is not None:
                raise self.error
            return self.answer

        return reply()


class Orchestrator:
    def __init__(self, error: Exception | None = None) -> None:
        self.status = RemoteMethod({"accepting": True}, error)
        self.agent_stats = RemoteMethod({"calculator": {"finished": 1}}, error)
        self.task_counts = RemoteMethod({"queued": 2}, error)


def test_facts_come_from_the_namespaces_orchestrator_and_rays_nodes(monkeypatch):
    orchestrator = Orchestrator()
    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(ray, "get_actor",
                        lambda name, namespace: asked.append((name, namespace)) or orchestrator)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}])
    facts = RayClusterFacts("team-a")

    async def gather() -> tuple[Any, ...]:
        return (await facts.status(), await facts.agent_stats(60.0, "acme"),
                await facts.task_counts("acme"), await facts.nodes())

    assert asyncio.run(gather()) == ({"accepting": True}, {"calculator": {"finished": 1}},
                                     {"queued": 2}, [{"Alive": True}])
    assert set(asked) == {(ORCHESTRATOR_NAME, "team-a")}
    assert orchestrator.agent_stats.calls == [(60.0, "acme")]
    assert orchestrator.task_counts.calls == [("acme",)]


def test_no_orchestrator_or_a_dead_one_is_retryable(monkeypatch):
    def missing(name: str, namespace: str) -> Any:
        raise ValueError("Failed to look up actor")

    monkeypatch.setattr(ray, "get_actor", missing)
    with pytest.raises(RetryableAgentError, match="no orchestrator is running in Ray namespace"):
        asyncio.run(RayClusterFacts("team-a").status())

    monkeypatch.setattr(ray, "get_actor",
                        lambda name, namespace: Orchestrator(RayActorError()))
    with pytest.raises(RetryableAgentError, match="the orchestrator did not answer"):
        asyncio.run(RayClusterFacts("team-a").task_counts("acme"))
