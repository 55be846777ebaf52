"""The ML decision actor: the semantic router as a long-lived service that learns from outcomes.

The orchestrator sends it the descriptions of tasks that name no agent type, a batch at a time,
with each type's current load, and gets back one `RouteDecision` per task (`routed` false when no
type is a confident match). It reports the tasks that succeeded on a confident semantic route,
which become `learned` examples, and relays users' corrections, which become `feedback` examples
(and replace learned or feedback examples of other types for nearly the same text). Every
`stats_interval_s` it reads each type's recent success rate and latency from storage, so a type
that keeps failing loses standing in close calls.

Fault-tolerance contract
- Durable: learned and feedback examples, in storage (`storage.example_store`), committed before
  they join the index.
- Rebuilt on (re)start: the index, from the agent types' declared examples plus every stored
  example; the per-type statistics, from storage.
- Not kept: decisions in flight (the orchestrator retries them: a task is durable before it is
  routed) and learning reports not yet applied (learning is best effort).

A plain class: `actors/ray_backend.py` makes it a detached actor that Ray restarts forever. The
CPU work (encoding, searching) runs in threads, so the actor keeps answering while it works.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ml.config import RouterConfig
from ml.decision import TypeStats
from ml.errors import EmbeddingModelUnavailable, RouterUnavailable
from ml.router import check_description
from ml.semantic_router import ROUTED_CHARS, SemanticRouter
from storage.errors import InvalidRequest, StorageError
from storage.example_store import STORED_SOURCES, ExampleStore, NewExample, StoredExample
from storage.messages import RouteDecision, utcnow
from storage.task_store import TaskStore

if TYPE_CHECKING:
    from actors.agent import Agent
    from ml.embeddings import Embedder

log = logging.getLogger("ymera.router")

STORE_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0)
SAME_TEXT_SIMILARITY = 0.999
LearningOutcome = tuple[str, str, str, float]  # task id, description, agent type, confidence


class RouterService:
    """Decides agent types for task descriptions and learns from what happened to them."""

    def __init__(self, agent_types: Mapping[str, type[Agent]], config: RouterConfig,
                 database_url: str, embedder: Embedder | None = None) -> None:
        self.config = config
        self.database_url = database_url
        self._agent_types = dict(agent_types)
        self._embedder = embedder
        self.router: SemanticRouter | None = None
        self.examples: ExampleStore | None = None
        self.tasks: TaskStore | None = None
        self._ready = asyncio.Event()
        self._start_error: BaseException | None = None
        self._learning = asyncio.Lock()
        self._stats: dict[str, TypeStats] = {}
        self._background: set[asyncio.Task] = set()
        self._spawn(self._start(), "router-start")

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ----------------------------------------------------------------- start

    async def _start(self) -> None:
        try:
            self.router = await asyncio.to_thread(
                SemanticRouter, self._agent_types, self._embedder, self.config.policy())
        except EmbeddingModelUnavailable as exc:
            self._start_error = exc
            self._ready.set()
            log.error("the router cannot start: %s", exc)
            return
        self.examples = await self._open(ExampleStore)
        self.tasks = await self._open(TaskStore)
        stored = await self._load_stored()
        self._ready.set()
        log.info("router ready: %d examples (%d from storage)", len(self.router.index), stored)
        self._spawn(self._stats_loop(), "router-stats")

    async def _open(self, store_class: Any) -> Any:
        failures = 0
        while True:
            try:
                return await store_class.open(self.database_url)
            except StorageError as exc:
                delay = STORE_RETRY_DELAYS_S[min(failures, len(STORE_RETRY_DELAYS_S) - 1)]
                failures += 1
                log.error("the router cannot open storage (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def _load_stored(self) -> int:
        assert self.router is not None and self.examples is not None
        known = [e for e in await self.examples.all() if e.agent_type in self.router.agent_types]
        await asyncio.to_thread(self._index, known)
        return len(known)

    def _index(self, stored: Sequence[StoredExample]) -> None:
        assert self.router is not None
        if not stored:
            return
        vectors = self.router.embedder.encode([self.router.routing_text(e.text) for e in stored])
        for position, example in enumerate(stored):
            self.router.index.add([example.text], example.agent_type, example.source,
                                  vectors=vectors[position:position + 1], keys=[example.id])

    async def _wait_ready(self) -> SemanticRouter:
        await self._ready.wait()
        if self.router is None:
            raise RouterUnavailable(f"the router could not start: {self._start_error}")
        return self.router

    async def ready(self) -> dict[str, Any]:
        """Wait until the index is built; returns `describe()`."""
        await self._wait_ready()
        return await self.describe()

    # ----------------------------------------------------------------- deciding

    async def decide_many(self, descriptions: Sequence[str],
                          load: Mapping[str, float] | None = None) -> list[RouteDecision]:
        """One decision per description, in order. `load` is each type's busy fraction (0-1)."""
        router = await self._wait_ready()
        for description in descriptions:
            check_description(description)
        if load is not None:
            router.update_signals(load=load)
        decisions = await asyncio.to_thread(router.decide_many, list(descriptions))
        return [decision.to_route_decision() for decision in decisions]

    # ----------------------------------------------------------------- learning

    async def learn(self, outcomes: Sequence[LearningOutcome]) -> int:
        """Learn the confident routes of tasks that succeeded; returns how many examples were
        added (near-duplicates of a type's examples are skipped)."""
        router = await self._wait_ready()
        if not self.config.learn:
            return 0
        wanted = [(task_id, description[:ROUTED_CHARS], agent_type)
                  for task_id, description, agent_type, confidence in outcomes
                  if confidence >= self.config.learn_min_confidence
                  and agent_type in router.agent_types and description.strip()]
        if not wanted:
            return 0
        async with self._learning:
            fresh = await asyncio.to_thread(self._not_yet_known, wanted)
            if not fresh:
                return 0
            assert self.examples is not None
            stored = await self.examples.add(
                [NewExample(agent_type, text, "learned", task_id)
                 for task_id, text, agent_type, _ in fresh])
            for example, (_, _, _, vector) in zip(stored, fresh):
                router.index.add([example.text], example.agent_type, "learned",
                                 vectors=vector[None, :], keys=[example.id])
            for agent_type in {example.agent_type for example in stored}:
                await self._prune(agent_type, "learned")
        return len(stored)

    def _not_yet_known(self, wanted: list[tuple[str, str, str]]) -> list[tuple[str, str, str, Any]]:
        assert self.router is not None
        router = self.router
        vectors = router.embedder.encode([router.routing_text(text) for _, text, _ in wanted])
        threshold = router.policy.duplicate_similarity
        fresh: list[tuple[str, str, str, Any]] = []
        for (task_id, text, agent_type), vector in zip(wanted, vectors):
            nearest = router.index.nearest_of_type(vector, agent_type)
            if nearest is not None and nearest.similarity >= threshold:
                continue
            if any(other == agent_type and float(vector @ kept) >= threshold
                   for _, _, other, kept in fresh):
                continue
            fresh.append((task_id, text, agent_type, vector))
        return fresh

    async def feedback(self, description: str, agent_type: str,
                       task_id: str | None = None) -> dict[str, Any]:
        """Record that `description` should go to `agent_type`: a `feedback` example, replacing
        learned or feedback examples of other types for nearly the same text."""
        router = await self._wait_ready()
        check_description(description)
        if agent_type not in router.agent_types:
            raise InvalidRequest(
                f"unknown agent_type {agent_type!r}; known types: "
                f"{', '.join(sorted(router.agent_types))}", {"agent_type": agent_type})
        text = description[:ROUTED_CHARS]
        async with self._learning:
            vector = (await asyncio.to_thread(
                router.embedder.encode, [router.routing_text(text)]))[0]
            near = router.index.near(vector, router.policy.duplicate_similarity)
            replaced = [example.key for example, _ in near
                        if example.agent_type != agent_type and example.key is not None
                        and example.source in STORED_SOURCES]
            assert self.examples is not None
            if replaced:
                await self.examples.delete(replaced)
                router.index.remove_keys(replaced)
            known = any(example.agent_type == agent_type and similarity >= SAME_TEXT_SIMILARITY
                        for example, similarity in near)
            if not known:
                (stored,) = await self.examples.add(
                    [NewExample(agent_type, text, "feedback", task_id)])
                router.index.add([text], agent_type, "feedback", vectors=vector[None, :],
                                 keys=[stored.id])
                await self._prune(agent_type, "feedback")
        return {"agent_type": agent_type, "added": not known, "replaced": len(replaced)}

    async def _prune(self, agent_type: str, source: str) -> None:
        assert self.examples is not None and self.router is not None
        removed = await self.examples.prune(agent_type, source, self.config.max_learned_per_type)
        if removed:
            self.router.index.remove_keys(removed)

    # ----------------------------------------------------------------- agent types

    async def add_type(self, agent_class: type[Agent]) -> int:
        """Register an agent type while serving (or refresh its declared examples), with the
        examples stored for it; returns how many examples it now has."""
        router = await self._wait_ready()
        name = agent_class.spec.name
        await asyncio.to_thread(router.add_type, agent_class)
        assert self.examples is not None
        stored = [e for e in await self.examples.all() if e.agent_type == name]
        router.index.remove_keys([e.id for e in stored])
        await asyncio.to_thread(self._index, stored)
        return len(router.index.examples(name))

    async def remove_type(self, name: str) -> int:
        """Stop routing to `name`; its stored examples stay for when it comes back."""
        router = await self._wait_ready()
        return router.remove_type(name)

    # ----------------------------------------------------------------- signals and state

    async def _stats_loop(self) -> None:
        while True:
            try:
                await self.refresh_stats()
            except Exception:
                log.exception("reading agent statistics failed")
            await asyncio.sleep(self.config.stats_interval_s)

    async def refresh_stats(self) -> dict[str, TypeStats]:
        """Read each type's recent success rate and latency from storage into the router."""
        router = await self._wait_ready()
        assert self.tasks is not None
        since = utcnow() - timedelta(seconds=self.config.stats_window_s)
        observed = await self.tasks.agent_stats(since)
        self._stats = {
            agent_type: TypeStats(success_rate=row.get("success_rate"),
                                  mean_latency_s=row.get("duration_mean_s"),
                                  samples=int(row.get("finished") or 0))
            for agent_type, row in observed.items() if agent_type in router.agent_types}
        router.update_signals(stats=self._stats)
        return self._stats

    async def describe(self) -> dict[str, Any]:
        """What the router knows: its examples by type and source, policy and statistics."""
        router = await self._wait_ready()
        counts: dict[str, dict[str, int]] = {name: {} for name in sorted(router.agent_types)}
        for example in router.index.examples():
            by_source = counts.setdefault(example.agent_type, {})
            by_source[example.source] = by_source.get(example.source, 0) + 1
        return {"agent_types": sorted(router.agent_types), "examples": counts,
                "policy": router.policy.to_json(),
                "stats": {t: dataclasses.asdict(s) for t, s in self._stats.items()}}

    async def stored_examples(self, agent_type: str | None = None) -> list[dict[str, Any]]:
        """The learned and feedback examples in the index, oldest first."""
        router = await self._wait_ready()
        return [{"id": e.key, "agent_type": e.agent_type, "text": e.text, "source": e.source}
                for e in router.index.examples(agent_type) if e.key is not None]

    async def pid(self) -> int:
        return os.getpid()

    async def close(self) -> None:
        """Stop the background work and close storage (for in-process use)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for store in (self.examples, self.tasks):
            if store is not None:
                await store.close()
