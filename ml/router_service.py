"""The ML decision actor: the semantic router as a long-lived service that learns from outcomes.

The orchestrator sends it the descriptions of tasks that name no agent type, a batch at a time,
each with its tenant, with each type's current load, and gets back one `RouteDecision` per task
(`routed` false when no type is a confident match). It reports the tasks that succeeded on a
confident semantic route, which become `learned` examples of the task's tenant, and relays
users' corrections, which become `feedback` examples of the task's tenant (and replace that
tenant's learned or feedback examples of other types for nearly the same text). Every
`stats_interval_s` it reads each type's recent success rate and latency from storage, so a type
that keeps failing loses standing in close calls.

Tenants share the agents' declared examples (and the out-of-scope phrases); learned and feedback
examples belong to one tenant. A decision for a tenant searches the shared examples and that
tenant's own only, so another tenant's examples neither sway it nor appear in its `nearest`;
feedback replaces only its own tenant's examples. Each tenant's examples are indexed on first use
and kept in an LRU cache bounded by `RouterConfig.tenant_cache_examples` (`ml.tenant_examples`).

Fault-tolerance contract
- Durable: learned and feedback examples, in storage (`storage.example_store`), committed before
  they join the index.
- Rebuilt on (re)start: the shared index, from the agent types' declared examples; each
  tenant's index, from its stored examples when it is next needed; the per-type statistics,
  from storage.
- Not kept: decisions in flight (the orchestrator retries them: a task is durable before it is
  routed) and learning reports not yet applied (learning is best effort).

It is also the platform's one holder of the embedding model: `embed` encodes texts for the agent
replicas (`actors.shared_embedder`), so no other process loads torch and the model. Routing comes
first: a caller's texts are encoded in small slices (`embed_slices`), one slice at a time across
callers, so a decision waits for the model for at most one slice.

A plain class: `actors/ray_backend.py` makes it a detached actor that Ray restarts forever. The
CPU work (encoding, searching) runs in threads, so the actor keeps answering while it works.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.config import RouterConfig
from ml.decision import TypeStats
from ml.errors import EmbeddingModelUnavailable, RouterUnavailable
from ml.example_index import Example, ExampleIndex
from ml.router import check_description
from ml.semantic_router import ROUTED_CHARS, SemanticRouter
from ml.tenant_examples import TenantExamples
from storage.errors import InvalidRequest, StorageError
from storage.example_store import ExampleStore, NewExample, StoredExample, check_tenant
from storage.messages import AgentSpec, RouteDecision, utcnow
from storage.task_store import TaskStore

if TYPE_CHECKING:
    from ml.embeddings import Embedder

log = logging.getLogger("ymera.router")

STORE_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0)
SAME_TEXT_SIMILARITY = 0.999
# What `embed` encodes per turn at the model, which is what a decision may wait for: at most
# EMBED_SLICE texts and about EMBED_SLICE_CHARS characters (the model reads about 1,200 of a text).
EMBED_SLICE = 16
EMBED_SLICE_CHARS = 4_000
MODEL_WINDOW_CHARS = 1_200
DEFAULT_TENANT = "default"
# task id, description, agent type, confidence, tenant
LearningOutcome = tuple[str, str, str, float, str]


class RouterService:
    """Decides agent types for task descriptions and learns from what happened to them, keeping
    each tenant's learned and feedback examples apart from every other tenant's."""

    def __init__(self, agent_types: Mapping[str, AgentSpec], config: RouterConfig,
                 database_url: str, embedder: Embedder | None = None) -> None:
        self.config = config
        self.database_url = database_url
        self._agent_types = dict(agent_types)
        self._embedder = embedder
        self.router: SemanticRouter | None = None
        self.examples: ExampleStore | None = None
        self.tasks: TaskStore | None = None
        self.memory = TenantExamples(config.tenant_cache_examples)
        self._ready = asyncio.Event()
        self._start_error: BaseException | None = None
        # Held while examples are written and while tenants are loaded from storage, so a load
        # never misses an example being written.
        self._learning = asyncio.Lock()
        # Held by `embed` for one slice at a time, so other processes' encoding takes at most one
        # worker thread and leaves the model free for a decision after every slice.
        self._embedding = asyncio.Lock()
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
        self._ready.set()
        log.info("router ready: %d shared examples; tenants' examples load on first use",
                 len(self.router.index))
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

    async def _wait_ready(self) -> SemanticRouter:
        await self._ready.wait()
        if self.router is None:
            raise RouterUnavailable(f"the router could not start: {self._start_error}")
        return self.router

    async def ready(self) -> dict[str, Any]:
        """Wait until the shared index is built; returns `describe()`."""
        await self._wait_ready()
        return await self.describe()

    # ----------------------------------------------------------------- tenants' examples

    async def _own(self, tenants: Sequence[str]) -> dict[str, ExampleIndex]:
        """Each of `tenants`' own index, those not cached loaded from storage together."""
        found = {tenant: self.memory.get(tenant) for tenant in dict.fromkeys(tenants)}
        if all(index is not None for index in found.values()):
            return found  # type: ignore[return-value]
        async with self._learning:
            return await self._own_locked(list(found))

    async def _own_locked(self, tenants: Sequence[str]) -> dict[str, ExampleIndex]:
        """`_own` for callers holding `_learning`: one storage read and one encoding call for
        all the tenants not cached."""
        router = self.router
        assert router is not None and self.examples is not None
        own = {tenant: self.memory.get(tenant) for tenant in dict.fromkeys(tenants)}
        missing = [tenant for tenant, index in own.items() if index is None]
        if missing:
            stored = await self._read_stored(missing)
            known = [e for tenant in missing for e in stored[tenant]
                     if e.agent_type in router.agent_types]
            loaded = {tenant: ExampleIndex(router.embedder) for tenant in missing}
            await asyncio.to_thread(self._index, loaded, known)
            for tenant in missing:
                own[tenant] = loaded[tenant]
                self.memory.put(tenant, loaded[tenant])
        return own  # type: ignore[return-value]

    async def _read_stored(self, tenants: Sequence[str]) -> dict[str, list[StoredExample]]:
        """The tenants' stored examples, retried through a short storage outage (a decision
        never goes ahead without its tenant's examples)."""
        assert self.examples is not None
        for delay in (*STORE_RETRY_DELAYS_S, None):
            try:
                return await self.examples.by_tenant(tenants)
            except StorageError as exc:
                if delay is None:
                    raise
                log.warning("reading %d tenants' routing examples failed (%s); retrying in "
                            "%.1fs", len(tenants), exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _index(self, indexes: Mapping[str, ExampleIndex], stored: Sequence[StoredExample]) -> None:
        """Encode `stored` in one call and add each tenant's examples to its index at once."""
        assert self.router is not None
        if not stored:
            return
        vectors = self.router.embedder.encode([self.router.routing_text(e.text) for e in stored])
        rows: dict[str, list[int]] = {}
        for position, example in enumerate(stored):
            rows.setdefault(example.tenant, []).append(position)
        for tenant, positions in rows.items():
            indexes[tenant].add_examples(
                [Example(stored[p].text, stored[p].agent_type, stored[p].source, stored[p].id)
                 for p in positions], vectors[positions])

    @staticmethod
    def _tenants(tenants: str | Sequence[str], count: int) -> list[str]:
        if isinstance(tenants, str):
            return [check_tenant(tenants)] * count
        tenants = list(tenants)
        if len(tenants) != count:
            raise InvalidRequest(f"{len(tenants)} tenants for {count} descriptions: give one "
                                 "tenant, or one per description", {"field": "tenants"})
        return [check_tenant(tenant) for tenant in tenants]

    # ----------------------------------------------------------------- deciding

    async def decide_many(self, descriptions: Sequence[str],
                          load: Mapping[str, float] | None = None,
                          tenants: str | Sequence[str] = DEFAULT_TENANT) -> list[RouteDecision]:
        """One decision per description, in order. `load` is each type's busy fraction (0-1);
        `tenants` is the tenant of every description, or one per description: each decision
        sees the shared examples and its own tenant's examples only."""
        router = await self._wait_ready()
        for description in descriptions:
            check_description(description)
        tenants = self._tenants(tenants, len(descriptions))
        own = await self._own(tenants)
        if load is not None:
            router.update_signals(load=load)
        decisions = await asyncio.to_thread(router.decide_many, list(descriptions), None,
                                            [own[tenant] for tenant in tenants])
        return [decision.to_route_decision() for decision in decisions]

    # ----------------------------------------------------------------- embedding

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """What `Embedder.encode(texts)` returns (float32 unit rows, in input order), from the
        router's model and cache, for the platform's other processes. Encoded a slice at a time
        (`embed_slices`), so decisions keep their turn at the model (see the module)."""
        router = await self._wait_ready()
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not all(
                isinstance(text, str) for text in texts):
            raise InvalidRequest("embed takes a list of texts (strings)", {"field": "texts"})
        rows = [np.zeros((0, router.embedder.dimension), dtype=np.float32)]
        for piece in embed_slices(texts):
            async with self._embedding:
                rows.append(await asyncio.to_thread(router.embedder.encode, piece))
        return np.concatenate(rows)

    # ----------------------------------------------------------------- learning

    async def learn(self, outcomes: Sequence[LearningOutcome]) -> int:
        """Learn the confident routes of tasks that succeeded, each as an example of its task's
        tenant; returns how many examples were added (near-duplicates of a type's examples
        that tenant already sees are skipped)."""
        router = await self._wait_ready()
        for outcome in outcomes:
            if len(outcome) != 5:
                raise InvalidRequest("a learning outcome is (task id, description, agent type, "
                                     "confidence, tenant)", {"field": "outcomes"})
            check_tenant(outcome[4])
        if not self.config.learn:
            return 0
        wanted = [(tenant, task_id, description[:ROUTED_CHARS], agent_type)
                  for task_id, description, agent_type, confidence, tenant in outcomes
                  if confidence >= self.config.learn_min_confidence
                  and agent_type in router.agent_types and description.strip()]
        if not wanted:
            return 0
        async with self._learning:
            own = await self._own_locked([tenant for tenant, *_ in wanted])
            fresh = await asyncio.to_thread(self._not_yet_known, wanted, own)
            if not fresh:
                return 0
            assert self.examples is not None
            stored = await self.examples.add(
                [NewExample(agent_type, text, "learned", task_id, tenant)
                 for tenant, task_id, text, agent_type, _ in fresh])
            for example, (*_, vector) in zip(stored, fresh):
                own[example.tenant].add([example.text], example.agent_type, "learned",
                                        vectors=vector[None, :], keys=[example.id])
            for tenant, agent_type in {(e.tenant, e.agent_type) for e in stored}:
                await self._prune(own[tenant], tenant, agent_type, "learned")
            self.memory.fit()
        return len(stored)

    def _not_yet_known(self, wanted: list[tuple[str, str, str, str]],
                       own: Mapping[str, ExampleIndex]) -> list[tuple[str, str, str, str, Any]]:
        assert self.router is not None
        router = self.router
        vectors = router.embedder.encode([router.routing_text(text) for *_, text, _ in wanted])
        threshold = router.policy.duplicate_similarity
        fresh: list[tuple[str, str, str, str, Any]] = []
        for (tenant, task_id, text, agent_type), vector in zip(wanted, vectors):
            nearest = [n for n in (router.index.nearest_of_type(vector, agent_type),
                                   own[tenant].nearest_of_type(vector, agent_type))
                       if n is not None]
            if any(n.similarity >= threshold for n in nearest):
                continue
            if any(other_tenant == tenant and other == agent_type
                   and float(vector @ kept) >= threshold
                   for other_tenant, _, _, other, kept in fresh):
                continue
            fresh.append((tenant, task_id, text, agent_type, vector))
        return fresh

    async def feedback(self, description: str, agent_type: str, task_id: str | None = None,
                       tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        """Record that `description` should go to `agent_type` for `tenant`: a `feedback`
        example of that tenant, replacing that tenant's learned or feedback examples of other
        types for nearly the same text (another tenant's examples are never touched)."""
        router = await self._wait_ready()
        check_description(description)
        check_tenant(tenant)
        if agent_type not in router.agent_types:
            raise InvalidRequest(
                f"unknown agent_type {agent_type!r}; known types: "
                f"{', '.join(sorted(router.agent_types))}", {"agent_type": agent_type})
        text = description[:ROUTED_CHARS]
        async with self._learning:
            own = (await self._own_locked([tenant]))[tenant]
            vector = (await asyncio.to_thread(
                router.embedder.encode, [router.routing_text(text)]))[0]
            near = own.near(vector, router.policy.duplicate_similarity)
            replaced = [example.key for example, _ in near
                        if example.agent_type != agent_type and example.key is not None]
            assert self.examples is not None
            if replaced:
                await self.examples.delete(tenant, replaced)
                own.remove_keys(replaced)
            known = any(example.agent_type == agent_type and similarity >= SAME_TEXT_SIMILARITY
                        for example, similarity in
                        [*near, *router.index.near(vector, SAME_TEXT_SIMILARITY)])
            if not known:
                (stored,) = await self.examples.add(
                    [NewExample(agent_type, text, "feedback", task_id, tenant)])
                own.add([text], agent_type, "feedback", vectors=vector[None, :],
                        keys=[stored.id])
                await self._prune(own, tenant, agent_type, "feedback")
            self.memory.fit()
        return {"agent_type": agent_type, "added": not known, "replaced": len(replaced)}

    async def _prune(self, own: ExampleIndex, tenant: str, agent_type: str, source: str) -> None:
        assert self.examples is not None
        removed = await self.examples.prune(tenant, agent_type, source,
                                            self.config.max_learned_per_type)
        if removed:
            own.remove_keys(removed)

    # ----------------------------------------------------------------- agent types

    async def add_type(self, spec: AgentSpec) -> int:
        """Register an agent type while serving (or refresh its declared examples); returns
        how many declared examples it now has. Tenants' examples are indexed again on their
        next use (the agent-name mask changed, and examples kept for this type return)."""
        router = await self._wait_ready()
        async with self._learning:
            await asyncio.to_thread(router.add_type, spec)
            self.memory.clear()
        return len(router.index.examples(spec.name))

    async def remove_type(self, name: str) -> int:
        """Stop routing to `name`; returns how many of its declared examples went. Its stored
        examples stay for when it comes back."""
        router = await self._wait_ready()
        async with self._learning:
            removed = router.remove_type(name)
            for _, index in self.memory.items():
                index.remove_type(name)
        return removed

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

    async def describe(self, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        """What the router knows for `tenant`: the shared examples and that tenant's own by
        type and source (no other tenant's counts), policy and statistics."""
        router = await self._wait_ready()
        check_tenant(tenant)
        own = (await self._own([tenant]))[tenant]
        counts: dict[str, dict[str, int]] = {name: {} for name in sorted(router.agent_types)}
        for example in [*router.index.examples(), *own.examples()]:
            by_source = counts.setdefault(example.agent_type, {})
            by_source[example.source] = by_source.get(example.source, 0) + 1
        return {"tenant": tenant, "agent_types": sorted(router.agent_types), "examples": counts,
                "policy": router.policy.to_json(),
                "stats": {t: dataclasses.asdict(s) for t, s in self._stats.items()}}

    async def stored_examples(self, agent_type: str | None = None,
                              tenant: str = DEFAULT_TENANT) -> list[dict[str, Any]]:
        """`tenant`'s learned and feedback examples in its index, oldest first."""
        await self._wait_ready()
        check_tenant(tenant)
        own = (await self._own([tenant]))[tenant]
        return [{"id": e.key, "agent_type": e.agent_type, "text": e.text, "source": e.source}
                for e in own.examples(agent_type) if e.key is not None]

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


def embed_slices(texts: Sequence[str]) -> Iterator[Sequence[str]]:
    """`texts` in order, in slices of at most `EMBED_SLICE` texts and `EMBED_SLICE_CHARS`
    characters (each text counted up to what the model reads; a longer text is a slice alone)."""
    start = 0
    while start < len(texts):
        end, chars = start, 0
        while end < len(texts) and end - start < EMBED_SLICE:
            chars += min(len(texts[end]), MODEL_WINDOW_CHARS)
            if chars > EMBED_SLICE_CHARS and end > start:
                break
            end += 1
        yield texts[start:end]
        start = end
