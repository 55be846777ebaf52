"""The orchestrator: the one writer of every task's lifecycle.

It is a small core over parts that each own one job, the way Ray Serve's controller drives its
managers: `Admission` (what is accepted, quotas), `Dispatcher` (queues and attempts),
`PoolManager` (replicas), `RoutingStage` (tasks waiting for the router), `Lifecycle` (the
records). The control loop calls each part's `update()`. Its public operations are those of
`actors.orchestrator_api.OrchestratorApi`; the read-throughs live in `actors.store_reads`, the
routing operations in `actors.router_admin`, the workflow operations in
`actors.workflow_operations` and the webhook operations in `actors.webhook_admin`.

Fault-tolerance contract
- Durable: tasks, attempts and events in storage. A submission is acknowledged only after its
  task row is committed. Every later step is staged to storage in order (group commit); an
  outcome is committed before anyone waiting on the task is told. Pool bounds an operator set.
- Rebuilt on (re)start: the queues and in-flight table, from storage (queued tasks are queued
  again, those without an agent type for the router; a task found running lost its attempt with
  the previous incarnation and is retried or dead-lettered); the pools, by re-attaching to the
  detached replicas Ray still runs and replacing the rest; the router, by finding the detached
  router actor (Ray restarts it; it rebuilds its index from storage).
- Routing: a task that names no agent type is committed first, then routed (`RoutingStage`);
  a router failure delays its decision, never loses the task.
- Publishing: with Redis configured, every committed event is published for live readers
  (`EventPublisher`), best effort: storage stays the record readers resume from.
- Fencing: an outcome is recorded only for the task's current attempt number, so a late result
  of an older attempt never overwrites a newer one. Execution is at-least-once; the recorded
  outcome is exactly-once.
- Storage outages: every public operation reports storage trouble as `PlatformUnavailable`
  (retryable), never as the driver's exception.
- Never dies of a step: the control loop catches and logs each step's failure.
- Events out: a terminal state's webhook deliveries commit with it (`storage.webhook_outbox`);
  the detached delivery actor is started (or found) at start and woken after such commits
  (`actors.events_out`), and messages to agent types that start work from them become tasks
  (`actors.message_pump`).
- Model gateway: with a model configured (`config.llm`), the detached gateway actor is started
  (or found) at start, Ray restarts it, and only then is the `llm` agent type registered.

Ray restarts this actor forever (see `actors/deploy.py`); nothing here assumes it runs once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from actors.admission import Admission
from actors.backend import Backend
from actors.config import OrchestratorConfig
from actors.dispatch import Dispatcher
from actors.errors import PlatformUnavailable, storage_trouble_unavailable
from actors.events_out import EventsOut
from actors.lifecycle import Lifecycle
from actors.llm_admin import LlmAdministration
from actors.logs import configure_logging
from actors.metrics import OrchestratorMetrics
from actors.periodic import every
from actors.planning import Planning
from actors.pools import PoolManager, requested_bounds
from actors.registry import load_agent_types
from actors.router_admin import RouterAdministration
from actors.routing_stage import RouterClient, RoutingStage
from actors.store_reads import StoreReads
from actors.webhook_admin import WebhookAdministration
from actors.workflow_engine import WorkflowEngine
from actors.workflow_operations import WorkflowOperations
from storage.errors import Conflict, InvalidRequest, NotFound, StorageError, YmeraError
from storage.messages import Task, TaskRequest, TaskStatus
from storage.pool_bounds import PoolBoundsStore
from storage.task_store import TaskStore
from storage.workflow_records import RunStatus

log = logging.getLogger("ymera.orchestrator")

STARTUP_WAIT_S = 60.0
STORE_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0)
DEAD_LETTER_REFRESH_S = 10.0


class Orchestrator(StoreReads, RouterAdministration, Planning, LlmAdministration,
                   WorkflowOperations, WebhookAdministration):
    """Accepts tasks, routes them, dispatches them to agent pools, and records every step."""

    def __init__(self, config: OrchestratorConfig, backend: Backend | None = None) -> None:
        if backend is None:
            from actors.ray_backend import RayBackend

            backend = RayBackend(config.namespace)
        configure_logging(config.log_format, config.log_level)
        self.config = config
        self.backend: Backend = backend
        self.metrics = OrchestratorMetrics()
        self.agent_types = load_agent_types(config.agent_modules, llm=config.llm is not None)
        fallback = config.router.fallback_agent_type
        if fallback is not None and fallback not in self.agent_types:
            raise InvalidRequest(f"the fallback agent type {fallback!r} is not registered; "
                                 f"known types: {', '.join(sorted(self.agent_types))}")
        self.llm_gateway: Any = None
        if config.llm is not None:
            self.llm_gateway = backend.start_llm_gateway(
                config.llm, config.database_url, config.redis_url, config.log_format,
                config.log_level)
        self.routing: RoutingStage | None = None
        if config.router.enabled:
            handle = backend.start_router(self.agent_types, config.router, config.database_url)
            self.routing = RoutingStage(
                RouterClient(backend, handle, config.router.decision_timeout_s),
                self._decided, self._load, config.router.batch_max)
        self.pools = PoolManager(backend, self.agent_types, config, self.metrics)
        self.dispatcher = Dispatcher(self.agent_types, self.pools, backend, self.routing,
                                     self._spawn)
        self.pools.on_change = self.dispatcher.wake
        self.admission = Admission(config, self.agent_types, self.routing is not None,
                                   self.metrics, self.dispatcher.enqueue, self.dispatcher.wake)
        self.lifecycle: Lifecycle | None = None
        self.accepting = True
        self.started_at = time.time()
        self._ready = asyncio.Event()
        self._start_error: BaseException | None = None
        self._inbox_store = None
        self._dead_letters = 0
        self.publisher: Any = None
        self.pool_bounds: PoolBoundsStore | None = None  # opened with the task store
        self._background: set[asyncio.Task] = set()
        self.workflows = WorkflowEngine(config, list(self.agent_types), self.routing is not None,
                                        self.metrics, self._spawn)
        self.events_out = EventsOut(config, backend, self._spawn, self.agent_types)
        self.admission.on_callbacks = self.events_out.submitted
        self._spawn(self._start(), "startup")

    # ----------------------------------------------------------------- start and loops

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _start(self) -> None:
        store = await self._open_store()
        on_commit = None
        if self.config.redis_url:
            from actors.event_publisher import EventPublisher
            from storage.event_bus import RedisEventBus

            self.publisher = EventPublisher(RedisEventBus(self.config.redis_url),
                                            self.config.namespace, self._tenant_of)
            on_commit = self.publisher.committed
            self._spawn(self.publisher.run(), "event-publisher")
        self.lifecycle = Lifecycle(store, self.config, on_commit, self.metrics)
        self.lifecycle.writer.on_flushed = self.events_out.flushed
        self.lifecycle.on_finished = self.workflows.task_finished
        self.dispatcher.lifecycle = self.lifecycle
        self._serve_metrics()
        self.pool_bounds = PoolBoundsStore(store.engine)
        self.pools.apply_operator_bounds(await self.pool_bounds.all())
        self.pools.attach()
        requeued = await self.lifecycle.reconcile(self.agent_types)
        for live in requeued:
            await self.dispatcher.enqueue(live)
        self._spawn(self._control_loop(), "control-loop")
        self._spawn(self.dispatcher.run(), "dispatch-loop")
        self._spawn(every(DEAD_LETTER_REFRESH_S, self._count_dead_letters,
                          "counting dead letters"), "dead-letter-gauge")
        if self.routing is not None:
            self._spawn(self.routing.run(), "routing")
            self._spawn(self.routing.run_learning(), "learning")
        self.workflows.start(store, self._submit_for_workflow, self._cancel_for_workflow)
        self.events_out.start(store, self.submit_many, store.get_tasks, self.agent_types)
        self._ready.set()
        log.info("orchestrator ready: %d tasks resumed from storage", len(requeued))

    def _serve_metrics(self) -> None:
        """Serve the metrics endpoint when configured; a port in use costs the endpoint, not
        the orchestrator."""
        self.metrics.watch(self._gauges, asyncio.get_running_loop())
        if self.config.metrics_port is None:
            return
        try:
            self.metrics.serve(self.config.metrics_host, self.config.metrics_port)
        except OSError as exc:
            log.error("cannot serve metrics on %s:%s (%s); Prometheus will see this target "
                      "down", self.config.metrics_host, self.config.metrics_port, exc)

    def _gauges(self) -> dict[str, dict[tuple[str, ...], float]]:
        """The gauges of `actors.metrics.GAUGES`, from the live state (on the event loop)."""
        pools = self.pools.pools
        return {
            "ymera_queue_depth": {(name,): n for name, n in self.dispatcher.queued().items()},
            "ymera_tasks_running": {(name,): sum(r.in_flight for r in pool.replicas.values())
                                    for name, pool in pools.items()},
            "ymera_routing_backlog": {(): len(self.routing) if self.routing is not None else 0},
            "ymera_replicas_desired": {(name,): pool.desired for name, pool in pools.items()},
            "ymera_replicas_alive": {(name,): pool.live_count() for name, pool in pools.items()},
            "ymera_dead_letters": {(): self._dead_letters},
            "ymera_workflow_runs_active": {
                (status.value,): self.workflows.gauges["by_status"].get(status.value, 0)
                for status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)},
            "ymera_workflow_runs_awaiting_approval": {
                (): self.workflows.gauges["awaiting_approval"]},
            "ymera_workflow_runs_overdue": {(): self.workflows.gauges["overdue"]},
        }

    async def _count_dead_letters(self) -> None:
        """Refresh the dead-letter gauge from storage."""
        store = (await self._wait_ready()).store
        self._dead_letters = await store.count_with_status(TaskStatus.DEAD)

    async def _open_store(self) -> TaskStore:
        failures = 0
        while True:
            try:
                return await TaskStore.open(self.config.database_url)
            except StorageError as exc:
                delay = STORE_RETRY_DELAYS_S[min(failures, len(STORE_RETRY_DELAYS_S) - 1)]
                failures += 1
                self._start_error = exc
                log.error("cannot open storage (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    def _tenant_of(self, task_id: str) -> str | None:
        return self.lifecycle.tenant_of(task_id) if self.lifecycle is not None else None

    def _load(self) -> dict[str, float]:
        return self.dispatcher.load()

    async def _wait_ready(self) -> Lifecycle:
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), STARTUP_WAIT_S)
            except asyncio.TimeoutError:
                raise PlatformUnavailable(
                    f"the orchestrator is still starting: {self._start_error or 'reconciling'}"
                ) from None
        assert self.lifecycle is not None
        return self.lifecycle

    async def ready(self) -> bool:
        """Wait until the orchestrator has reconciled, every pool is at full strength and the
        router (when routing is on) has built its index."""
        await self._wait_ready()
        if self.routing is not None:
            await self._router_ready()
        while any(p.live_count() < p.desired for p in self.pools.pools.values()):
            await asyncio.sleep(0.1)
        return True

    async def _control_loop(self) -> None:
        """Every `health_interval_s`: each part's `update()`, each step's failure logged."""
        while True:
            try:
                await self.pools.update(self.dispatcher.queued())
            except Exception:
                log.exception("pool supervision step failed")
            await self.dispatcher.update()
            await asyncio.sleep(self.config.health_interval_s)

    # ----------------------------------------------------------------- client API

    @storage_trouble_unavailable
    async def submit(self, request: TaskRequest | dict) -> str:
        """Accept one task; returns its id once the task is durable."""
        return (await self.submit_many([request]))[0]

    @storage_trouble_unavailable
    async def accept(self, request: TaskRequest | dict, wait_s: float | None = None) -> Task:
        """Accept one task (as `submit_many`) and return it in the same call: as committed, or
        with `wait_s`, once finished or as it stands when `wait_s` runs out. A request whose
        idempotency key was seen before returns the earlier task as it stands."""
        ids, committed = await self._accept([request])
        if wait_s is not None:
            return await self.wait(ids[0], wait_s)
        return committed.get(ids[0]) or await self.get(ids[0])

    async def accept_each(self, requests: Sequence[TaskRequest | dict]
                          ) -> list[Task | YmeraError]:
        """Accept each request on its own, as `accept` without a wait does, all in one call:
        each one's task as committed, or its platform error, returned rather than raised, so a
        bad request fails only itself. Concurrent submissions of an API replica arrive this
        way (`actors.accept_coalescer`); their commits share the group commit."""
        outcomes = await asyncio.gather(*(self.accept(r) for r in requests),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, YmeraError):
                raise outcome
        return [o for o in outcomes if isinstance(o, (Task, YmeraError))]

    @storage_trouble_unavailable
    async def submit_many(self, requests: Sequence[TaskRequest | dict]) -> list[str]:
        """Accept tasks all together or not at all; ids in request order, once durable.

        A request whose idempotency key was seen before gets the earlier task's id and is not
        run again. Raises `InvalidRequest` (naming the request's index) or `QueueFull`.
        """
        return (await self._accept(requests))[0]

    async def _accept(self, requests: Sequence[TaskRequest | dict]
                      ) -> tuple[list[str], dict[str, Task]]:
        lifecycle = await self._wait_ready()
        if not self.accepting:
            raise PlatformUnavailable("the platform is draining and accepts no new tasks")
        return await self.admission.accept(lifecycle, requests)

    @storage_trouble_unavailable
    async def cancel(self, task_id: str) -> Task:
        """Cancel a queued or running task. A finished task cannot be cancelled (`Conflict`)."""
        lifecycle = await self._wait_ready()
        live = lifecycle.live.get(task_id)
        if live is None:
            task = await lifecycle.store.get_task(task_id)
            raise Conflict(f"task {task_id} is already {task.status.value}",
                           {"status": task.status.value})
        if live.status is TaskStatus.QUEUED and self.dispatcher.unqueue(live):
            await lifecycle.cancelled_while_queued(live)
        else:
            live.cancel_requested = True
            self.dispatcher.cancel_running(live)
            try:
                await asyncio.wait_for(live.done.wait(), 10.0)
            except asyncio.TimeoutError:
                pass
        return await lifecycle.store.get_task(task_id)

    @storage_trouble_unavailable
    async def requeue(self, task_id: str) -> Task:
        """Give a dead-lettered task a fresh budget of attempts; its history is kept."""
        lifecycle = await self._wait_ready()
        task = await lifecycle.store.get_task(task_id)
        if task.status is not TaskStatus.DEAD:
            raise Conflict(f"only dead tasks can be requeued; task {task_id} is "
                           f"{task.status.value}", {"status": task.status.value})
        if task.agent_type not in self.agent_types:
            raise Conflict(f"agent type {task.agent_type!r} is no longer registered")
        reserved = self.admission.reserve(lifecycle, [task.tenant])
        try:
            live = await lifecycle.requeue(task)
        finally:
            self.admission.release(reserved)
        self.dispatcher.push(live)
        return await lifecycle.store.get_task(task_id)

    async def task_output(self, task_id: str, attempt: int, kind: str,
                          data: dict[str, Any]) -> bool:
        """Record an output event (streamed text) of a running attempt, published like every
        task event; False when `attempt` is not the task's running one (nothing recorded)."""
        return (await self._wait_ready()).task_output(task_id, attempt, kind, data)

    async def _submit_for_workflow(self, requests: Sequence[TaskRequest]
                                   ) -> tuple[list[str], set[str]]:
        """The tasks' ids, and which of them this call created (the others existed already
        under their idempotency keys)."""
        ids, committed = await self._accept(requests)
        return ids, set(committed)

    async def _cancel_for_workflow(self, task_id: str) -> None:
        await self.cancel(task_id)

    # ----------------------------------------------------------------- operator commands

    @storage_trouble_unavailable
    async def status(self) -> dict[str, Any]:
        """Pools, queues and counts: what `ymera status` shows."""
        lifecycle = await self._wait_ready()
        return {
            "accepting": self.accepting,
            "uptime_s": time.time() - self.started_at,
            "metrics_address": self.metrics.address,
            "dead_letters": self._dead_letters,
            "storage": lifecycle.store.dialect,
            "queue_max": self.config.queue_max,
            "queued": self.dispatcher.queued(),
            "running": sum(1 for t in lifecycle.live.values() if t.status is TaskStatus.RUNNING),
            "tasks": await lifecycle.store.count_by_status(),
            "pools": self.pools.snapshot(),
            "routing": self._routing_snapshot(),
            "agent_types": {name: dataclasses.asdict(cls.spec)
                            for name, cls in self.agent_types.items()},
            "llm": self._models_configured(),
        }

    async def drain(self, timeout_s: float = 60.0) -> dict[str, int]:
        """Stop accepting tasks and wait for running attempts to finish; queued tasks stay
        durable in storage and resume at the next start."""
        lifecycle = await self._wait_ready()
        self.accepting = False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(t.status is TaskStatus.RUNNING for t in lifecycle.live.values()):
                break
            await asyncio.sleep(0.1)
        self.dispatcher.clear()
        running = sum(1 for t in lifecycle.live.values() if t.status is TaskStatus.RUNNING)
        await lifecycle.writer.stop()
        if self.publisher is not None:
            await self.publisher.close()
        return {"running": running, "queued_left": lifecycle.queued_count}

    async def stop_pools(self) -> int:
        """Kill every replica, the router, the model gateway and the webhook delivery actor
        (for `ymera down`, after `drain`). Returns how many replicas."""
        if self.routing is not None:
            self.backend.kill(self.routing.router.handle)
        if self.llm_gateway is not None:
            self.backend.kill(self.llm_gateway)
        if self.events_out.handle is not None:
            self.backend.kill(self.events_out.handle)
            self.events_out.handle = None
        killed = 0
        for pool in self.pools.pools.values():
            pool.set_bounds(0, 0)
            for replica in list(pool.replicas.values()):
                self.backend.kill(replica.handle)
                killed += 1
            pool.replicas.clear()
        return killed

    @storage_trouble_unavailable
    async def scale(self, agent_type: str, replicas: int | None = None, *,
                    min_replicas: int | None = None, max_replicas: int | None = None,
                    reset: bool = False) -> dict[str, Any]:
        """Pin a pool at `replicas`, or let it autoscale between `min_replicas` and
        `max_replicas` (either may be left as it is); `reset` gives it its configured bounds
        again. What an operator sets is stored first, so it outlives this orchestrator.
        Surplus replicas drain first."""
        pool = self.pools.pools.get(agent_type)
        if pool is None:
            raise NotFound(f"no agent type {agent_type!r}")
        if reset and (replicas, min_replicas, max_replicas) != (None, None, None):
            raise InvalidRequest("reset gives the pool its configured bounds; "
                                 "give it alone")
        bounds = None if reset else requested_bounds(pool, replicas, min_replicas,
                                                     max_replicas)
        await self._wait_ready()
        assert self.pool_bounds is not None
        if bounds is None:
            await self.pool_bounds.remove(agent_type)
            self.pools.reset_size(agent_type)
        else:
            await self.pool_bounds.put(agent_type, *bounds)
            self.pools.set_size(agent_type, *bounds)
        log.info("pool %s set to %d..%d replicas by %s", agent_type, pool.min_replicas,
                 pool.max_replicas, "its configuration" if reset else "hand")
        await self.pools.update()
        return pool.snapshot()

    async def pid(self) -> int:
        return os.getpid()

    async def replica_pids(self) -> dict[str, int | None]:
        """Process id of each live replica (operators and failure tests use these)."""
        return {r.name: r.pid for p in self.pools.pools.values() for r in p.replicas.values()}
