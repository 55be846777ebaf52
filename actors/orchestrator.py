"""The orchestrator: the one writer of every task's lifecycle.

Fault-tolerance contract
- Durable: tasks, attempts and events in storage. A submission is acknowledged only after its
  task row is committed. Every later step is staged to storage in order (group commit); an
  outcome is committed before anyone waiting on the task is told.
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
- Never dies of a step: the control loop catches and logs each step's failure.

Ray restarts this actor forever (see `actors/deploy.py`); nothing here assumes it runs once.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import time
from datetime import timedelta
from typing import Any

from actors.config import OrchestratorConfig
from actors.errors import (
    CallCancelled,
    CallFailed,
    CallTimedOut,
    PlatformUnavailable,
    QueueFull,
    ReplicaLost,
)
from actors.lifecycle import Lifecycle, LiveTask
from actors.logs import configure_logging
from actors.metrics import NO_ROUTE, OrchestratorMetrics
from actors.pools import AgentPool, PoolManager, Replica, requested_bounds
from actors.registry import load_agent_types
from actors.routing_stage import MAX_DECISION_ERRORS, RouterClient, RoutingStage
from actors.task_queue import TaskQueue
from actors.validation import validate_request
from ml.errors import NoConfidentRoute
from ml.router import check_description, requested_route
from storage.errors import Conflict, InvalidRequest, NotFound, StorageError
from storage.example_store import check_tenant
from storage.pool_bounds import PoolBoundsStore
from storage.messages import (
    AgentResult,
    AgentTask,
    Attempt,
    RouteDecision,
    RouteMethod,
    Task,
    TaskError,
    TaskEvent,
    TaskRequest,
    TaskStatus,
    utcnow,
)
from storage.task_store import TaskPage, TaskStore

log = logging.getLogger("ymera.orchestrator")

STARTUP_WAIT_S = 60.0
MAX_DISPATCH_BATCH = 32
MAX_SUBMISSION = 10_000
STORE_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0)
DEAD_LETTER_REFRESH_S = 10.0
CANDIDATES_REPORTED = 3


def timeout_grace_s(timeout_s: float) -> float:
    """How long past a task's timeout the orchestrator waits before it calls the replica hung."""
    return 1.0 + 0.1 * timeout_s


class Orchestrator:
    """Accepts tasks, routes them, dispatches them to agent pools, and records every step."""

    def __init__(self, config: OrchestratorConfig, backend: Any = None) -> None:
        if backend is None:
            from actors.ray_backend import RayBackend

            backend = RayBackend(config.namespace)
        configure_logging(config.log_format, config.log_level)
        self.config = config
        self.backend = backend
        self.metrics = OrchestratorMetrics()
        self.agent_types = load_agent_types(config.agent_modules)
        fallback = config.router.fallback_agent_type
        if fallback is not None and fallback not in self.agent_types:
            raise InvalidRequest(f"the fallback agent type {fallback!r} is not registered; "
                                 f"known types: {', '.join(sorted(self.agent_types))}")
        self.routing: RoutingStage | None = None
        if config.router.enabled:
            handle = backend.start_router(self.agent_types, config.router, config.database_url)
            self.routing = RoutingStage(
                RouterClient(backend, handle, config.router.decision_timeout_s),
                self._decided, self._load, config.router.batch_max)
        self.pools = PoolManager(backend, self.agent_types, config, self.metrics)
        self.pools.on_change = self._wake
        self.queues = {name: TaskQueue() for name in self.agent_types}
        self.lifecycle: Lifecycle | None = None
        self.accepting = True
        self.started_at = time.time()
        self._ready = asyncio.Event()
        self._start_error: BaseException | None = None
        self._dispatch_wakeup = asyncio.Event()
        self._pending_keys: dict[tuple[str, str], asyncio.Future] = {}
        self._reserved = 0
        self._reserved_by_tenant: collections.Counter[str] = collections.Counter()
        self._inbox_store: Any = None
        self._dead_letters = 0
        self.publisher: Any = None
        self.pool_bounds: PoolBoundsStore | None = None  # opened with the task store
        self._background: set[asyncio.Task] = set()
        self._spawn(self._start(), "startup")

    # ----------------------------------------------------------------- start and loops

    def _spawn(self, coroutine, name: str) -> asyncio.Task:
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
        self._serve_metrics()
        self.pool_bounds = PoolBoundsStore(store.engine)
        self.pools.apply_operator_bounds(await self.pool_bounds.all())
        self.pools.attach()
        requeued = await self.lifecycle.reconcile(self.agent_types)
        for live in requeued:
            await self._enqueue(live)
        self._spawn(self._control_loop(), "control-loop")
        self._spawn(self._dispatch_loop(), "dispatch-loop")
        self._spawn(self._count_dead_letters(), "dead-letter-gauge")
        if self.routing is not None:
            self._spawn(self.routing.run(), "routing")
            self._spawn(self.routing.run_learning(), "learning")
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
            "ymera_queue_depth": {(name,): len(queue) for name, queue in self.queues.items()},
            "ymera_tasks_running": {(name,): sum(r.in_flight for r in pool.replicas.values())
                                    for name, pool in pools.items()},
            "ymera_routing_backlog": {(): len(self.routing) if self.routing is not None else 0},
            "ymera_replicas_desired": {(name,): pool.desired for name, pool in pools.items()},
            "ymera_replicas_alive": {(name,): pool.live_count() for name, pool in pools.items()},
            "ymera_dead_letters": {(): self._dead_letters},
        }

    async def _count_dead_letters(self) -> None:
        """Refresh the dead-letter gauge from storage, every `DEAD_LETTER_REFRESH_S`."""
        while True:
            try:
                store = (await self._wait_ready()).store
                self._dead_letters = await store.count_with_status(TaskStatus.DEAD)
            except Exception as exc:
                log.warning("cannot count dead letters (%s)", exc)
            await asyncio.sleep(DEAD_LETTER_REFRESH_S)

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

    async def _router_ready(self) -> None:
        assert self.routing is not None
        while True:
            try:
                await self.routing.router.call("ready")
                return
            except CallFailed as exc:
                raise PlatformUnavailable(f"the router cannot start: {exc}") from None
            except (ReplicaLost, CallTimedOut, CallCancelled):
                await asyncio.sleep(0.5)

    async def _enqueue(self, live: LiveTask) -> None:
        """Queue a task for its pool, or for the router when it has no agent type yet."""
        assert self.lifecycle is not None
        if live.agent_type is not None:
            self.queues[live.agent_type].push(live.id, live.priority)
        elif self.routing is not None:
            self.routing.push(live)
        else:
            await self.lifecycle.unroutable(live, None, TaskError(
                "no_route", "this task names no agent_type and routing is switched off"))

    def _load(self) -> dict[str, float]:
        """How busy each agent type's pool is: in-flight calls over capacity (1 when empty)."""
        load = {}
        for name, pool in self.pools.pools.items():
            capacity = pool.live_count() * pool.concurrency
            busy = sum(r.in_flight for r in pool.replicas.values())
            load[name] = min(1.0, busy / capacity) if capacity else 1.0
        return load

    async def _decided(self, live: LiveTask, decision: RouteDecision | None,
                       error: str | None) -> None:
        """Act on the router's decision for `live`: queue it for the chosen (or fallback) type,
        or fail it when no type should take it."""
        lifecycle = self.lifecycle
        assert lifecycle is not None
        if lifecycle.live.get(live.id) is not live or live.status is not TaskStatus.QUEUED:
            return
        if live.cancel_requested:
            await lifecycle.cancelled_while_queued(live)
            return
        if decision is None:
            self.metrics.routed(NO_ROUTE, "error", confident=False)
            await lifecycle.unroutable(live, None, TaskError(
                "router_error", f"the router failed on this task {MAX_DECISION_ERRORS} times: "
                f"{error}", False, "RouterError"))
            return
        fallback = self.config.router.fallback_agent_type
        confident = decision.routed and decision.agent_type in self.queues
        if not confident:
            if fallback is None:
                self.metrics.routed(NO_ROUTE, NO_ROUTE, decision.confidence, confident=False)
                await lifecycle.unroutable(live, decision, self._no_route_error(decision))
                return
            decision = dataclasses.replace(
                decision, agent_type=fallback, method=RouteMethod.FALLBACK, routed=True,
                reason=f"fallback to {fallback}: {decision.reason}")
        self.metrics.routed(decision.agent_type, decision.method.value, decision.confidence,
                            confident)
        self.metrics.task_submitted(decision.agent_type, live.tenant)
        lifecycle.routed(live, decision)
        self.queues[decision.agent_type].push(live.id, live.priority)
        self._wake()

    def _no_route_error(self, decision: RouteDecision) -> TaskError:
        return TaskError(
            "no_confident_route",
            f"no agent type is a confident match for this task ({decision.reason}); submit it "
            f"again naming an agent_type, one of: {', '.join(sorted(self.agent_types))}",
            False, NoConfidentRoute.__name__,
            {"candidates": [list(c) for c in decision.candidates[:CANDIDATES_REPORTED]],
             "confidence": decision.confidence, "similarity": decision.similarity,
             "nearest": [n.to_json() for n in decision.nearest]})

    async def _control_loop(self) -> None:
        while True:
            try:
                await self.pools.update(
                    {agent_type: len(queue) for agent_type, queue in self.queues.items()})
            except Exception:
                log.exception("pool supervision step failed")
            self._wake()
            await asyncio.sleep(self.config.health_interval_s)

    def _wake(self) -> None:
        self._dispatch_wakeup.set()

    async def _dispatch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._dispatch_wakeup.wait()
            self._dispatch_wakeup.clear()
            next_due = None
            try:
                for agent_type, queue in self.queues.items():
                    self._dispatch_type(self.pools.pools[agent_type], queue)
                    due = queue.next_due()
                    if due is not None:
                        next_due = due if next_due is None else min(next_due, due)
            except Exception:
                log.exception("dispatch step failed")
            if next_due is not None:
                loop.call_at(loop.time() + max(0.0, next_due - time.monotonic()), self._wake)

    def _dispatch_type(self, pool: AgentPool, queue: TaskQueue) -> None:
        """Hand ready tasks to the least-loaded replicas. With a backlog, one call carries
        several tasks (up to the replica's free slots and `MAX_DISPATCH_BATCH`), which is what
        lets small tasks go faster than one Ray call each."""
        assert self.lifecycle is not None
        while len(queue):
            replica = pool.pick()
            if replica is None:
                return
            live_replicas = pool.live_count()
            size = min(pool.concurrency - replica.in_flight, MAX_DISPATCH_BATCH,
                       -(-len(queue) // max(live_replicas, 1)))
            batch: list[LiveTask] = []
            while len(batch) < max(size, 1):
                task_id = queue.pop()
                if task_id is None:
                    break
                live = self.lifecycle.live.get(task_id)
                if live is not None and live.status is TaskStatus.QUEUED:
                    batch.append(live)
            if not batch:
                return
            self._start_attempts(batch, replica)

    # ----------------------------------------------------------------- attempts

    def _start_attempts(self, batch: list[LiveTask], replica: Replica) -> None:
        assert self.lifecycle is not None
        attempts = self.lifecycle.attempts_started(batch, replica.name)
        replica.in_flight += len(batch)
        agent_tasks = [AgentTask(live.id, attempt, live.agent_type, live.description,
                                 live.payload, live.timeout_s, live.tenant)
                       for live, attempt in zip(batch, attempts)]
        call = self.backend.call(replica.handle, "run_many", agent_tasks, name=replica.name)
        for live in batch:
            live.replica_handle = replica.handle
        self._spawn(self._finish_attempts(batch, attempts, replica, call), "attempts")

    async def _finish_attempts(self, batch: list[LiveTask], attempts: list[int],
                               replica: Replica, call: Any) -> None:
        assert self.lifecycle is not None
        results: list[AgentResult | None] = [None] * len(batch)
        error: TaskError | None = None
        lost = False
        timeout_s = max(live.timeout_s for live in batch)
        try:
            results = await call.result(timeout_s + timeout_grace_s(timeout_s))
        except CallTimedOut:
            call.cancel()
            self.pools.mark_suspect(replica.agent_type, replica.name)
            error = TaskError("timeout", f"no answer from {replica.name} within "
                              f"{timeout_s:g}s; the replica is being checked", True)
        except ReplicaLost as exc:
            self.pools.replica_lost(replica.agent_type, replica.name)
            error = TaskError("replica_lost", str(exc), True, "ReplicaLost")
            lost = True
        except CallCancelled:
            error = TaskError("cancelled", "cancelled while running", False, "CallCancelled")
        except Exception as exc:
            log.exception("attempts on %s failed unexpectedly", replica.name)
            error = TaskError("orchestrator_error", f"{type(exc).__name__}: {exc}", True)
        finally:
            replica.in_flight -= len(batch)
            self._wake()
        finishing = []
        for live, attempt, result in zip(batch, attempts, results):
            if live.attempts != attempt:
                continue  # fenced: a newer attempt owns this task now
            if result is not None and result.ok and live.learnable and self.routing is not None:
                self.routing.learned(live)
            own_error = result.error if result is not None and not result.ok else error
            finishing.append((live, self.lifecycle.attempt_finished(
                live, attempt, result, own_error, lost)))
        retries = await asyncio.gather(*(f for _, f in finishing))
        for (live, _), retry_at in zip(finishing, retries):
            if retry_at is not None:
                self.queues[live.agent_type].push(live.id, live.priority, not_before=retry_at)
        if any(r is not None for r in retries):
            self._wake()

    # ----------------------------------------------------------------- client API

    async def submit(self, request: TaskRequest | dict) -> str:
        """Accept one task; returns its id once the task is durable."""
        return (await self.submit_many([request]))[0]

    async def accept(self, request: TaskRequest | dict, wait_s: float | None = None) -> Task:
        """Accept one task (as `submit_many`) and return it in the same call: as committed, or
        with `wait_s`, once finished or as it stands when `wait_s` runs out. A request whose
        idempotency key was seen before returns the earlier task as it stands."""
        ids, committed = await self._accept([request])
        if wait_s is not None:
            return await self.wait(ids[0], wait_s)
        return committed.get(ids[0]) or await self.get(ids[0])

    async def submit_many(self, requests: list[TaskRequest | dict]) -> list[str]:
        """Accept tasks all together or not at all; ids in request order, once durable.

        A request whose idempotency key was seen before gets the earlier task's id and is not
        run again. Raises `InvalidRequest` (naming the request's index) or `QueueFull`.
        """
        return (await self._accept(requests))[0]

    async def _accept(self, requests: list[TaskRequest | dict]
                      ) -> tuple[list[str], dict[str, Task]]:
        """`submit_many`'s ids, and the tasks this call created, as committed, by id."""
        lifecycle = await self._wait_ready()
        if not self.accepting:
            raise PlatformUnavailable("the platform is draining and accepts no new tasks")
        if not isinstance(requests, (list, tuple)) or not requests:
            raise InvalidRequest("submit at least one task")
        if len(requests) > min(MAX_SUBMISSION, self.config.queue_max):
            raise InvalidRequest(
                f"one submission may hold at most {min(MAX_SUBMISSION, self.config.queue_max)} "
                f"tasks, not {len(requests)}: split it", {"count": len(requests)})
        checked = [validate_request(r, self.config, i if len(requests) > 1 else None)
                   for i, r in enumerate(requests)]
        decisions = [self._requested_route(r, i if len(requests) > 1 else None)
                     for i, r in enumerate(checked)]
        ids: list[str | None] = [None] * len(checked)
        committed: dict[str, Task] = {}
        waits: dict[int, asyncio.Future] = {}
        owned: dict[tuple[str, str], asyncio.Future] = {}
        fresh: list[int] = []
        for index, request in enumerate(checked):
            key = (request.tenant, request.idempotency_key) if request.idempotency_key else None
            if key is None:
                fresh.append(index)
            elif key in self._pending_keys:
                waits[index] = self._pending_keys[key]
            else:
                owned[key] = self._pending_keys[key] = asyncio.get_running_loop().create_future()
                fresh.append(index)
        try:
            known = await lifecycle.known_idempotency_keys(list(owned))
            creating = []
            for index in fresh:
                request = checked[index]
                key = (request.tenant, request.idempotency_key)
                if key in known:
                    ids[index] = known[key]
                    owned[key].set_result(known[key])
                else:
                    creating.append(index)
            reserved = self._reserve([checked[i].tenant for i in creating])
            try:
                created = await lifecycle.create(
                    [(checked[i], decisions[i]) for i in creating])
            finally:
                self._release(reserved)
            for index, (live, task) in zip(creating, created):
                ids[index] = live.id
                committed[live.id] = task
                if live.agent_type is not None:
                    self.metrics.routed(live.agent_type, RouteMethod.REQUESTED.value)
                    self.metrics.task_submitted(live.agent_type, live.tenant)
                request = checked[index]
                if request.idempotency_key:
                    owned[(request.tenant, request.idempotency_key)].set_result(live.id)
                await self._enqueue(live)
            if created:
                self._wake()
        except BaseException as exc:
            for future in owned.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            for key in owned:
                self._pending_keys.pop(key, None)
        for index, future in waits.items():
            ids[index] = await asyncio.shield(future)
        return [i for i in ids if i is not None], committed

    def _requested_route(self, request: TaskRequest, index: int | None) -> RouteDecision | None:
        """The route to the type a request names (which must exist); None for the router."""
        if request.agent_type is not None:
            try:
                return requested_route(request.agent_type, self.agent_types)
            except InvalidRequest as exc:
                if index is None:
                    raise
                raise InvalidRequest(f"task {index}: {exc}", {**exc.details, "index": index}) \
                    from None
        if self.routing is None:
            where = f"task {index}: " if index is not None else ""
            raise NoConfidentRoute(
                f"{where}this task names no agent_type and routing is switched off "
                f"(YMERA_ROUTER_ENABLED=false); name one of: {', '.join(sorted(self.agent_types))}",
                {"agent_types": sorted(self.agent_types)})
        return None

    def _reserve(self, tenants: list[str]) -> collections.Counter[str]:
        """Hold queue places for tasks of these tenants while they are committed, or raise
        `QueueFull` if the queue, or a tenant's quota of waiting tasks, has no room."""
        assert self.lifecycle is not None
        queued = self.lifecycle.queued_count + self._reserved
        if queued + len(tenants) > self.config.queue_max:
            raise QueueFull(
                f"the task queue is full ({queued} of {self.config.queue_max} waiting); "
                "retry later",
                {"queued": queued, "queue_max": self.config.queue_max},
                retry_after_s=1.0,
            )
        wanted = collections.Counter(tenants)
        quota = self.config.tenant_queue_max
        for tenant, count in wanted.items() if quota is not None else ():
            waiting = (self.lifecycle.queued_by_tenant[tenant]
                       + self._reserved_by_tenant[tenant])
            if waiting + count > quota:
                raise QueueFull(
                    f"tenant {tenant!r} has {waiting} tasks waiting, and its quota is {quota}; "
                    "retry when some have started",
                    {"tenant": tenant, "queued": waiting, "tenant_queue_max": quota},
                    retry_after_s=1.0,
                )
        self._reserved += len(tenants)
        self._reserved_by_tenant.update(wanted)
        return wanted

    def _release(self, reserved: collections.Counter[str]) -> None:
        self._reserved -= sum(reserved.values())
        self._reserved_by_tenant.subtract(reserved)
        for tenant in reserved:
            if self._reserved_by_tenant[tenant] <= 0:
                del self._reserved_by_tenant[tenant]

    async def get(self, task_id: str) -> Task:
        return await (await self._wait_ready()).store.get_task(task_id)

    async def wait(self, task_id: str, timeout_s: float | None = None) -> Task:
        """The task once it has finished, or as it stands when `timeout_s` runs out."""
        return (await self.wait_many([task_id], timeout_s))[0]

    async def wait_many(self, task_ids: list[str], timeout_s: float | None = None) -> list[Task]:
        lifecycle = await self._wait_ready()
        pending = [lifecycle.live[t].done.wait() for t in task_ids if t in lifecycle.live]
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending), timeout_s)
            except asyncio.TimeoutError:
                pass
        found = await lifecycle.store.get_tasks(task_ids)
        missing = [t for t in task_ids if t not in found]
        if missing:
            raise NotFound(f"no task with id {missing[0]!r}", {"task_ids": missing})
        return [found[t] for t in task_ids]

    async def list_tasks(self, **filters: Any) -> TaskPage:
        if isinstance(filters.get("status"), str):
            try:
                filters["status"] = TaskStatus(filters["status"])
            except ValueError:
                raise InvalidRequest(
                    f"unknown status {filters['status']!r}; one of: "
                    f"{', '.join(s.value for s in TaskStatus)}") from None
        return await (await self._wait_ready()).store.list_tasks(**filters)

    async def dead_letters(self, limit: int = 100, cursor: str | None = None) -> TaskPage:
        return await self.list_tasks(status=TaskStatus.DEAD, limit=limit, cursor=cursor)

    async def attempts(self, task_id: str) -> list[Attempt]:
        store = (await self._wait_ready()).store
        await store.get_task(task_id)
        return await store.attempts(task_id)

    async def events(self, task_id: str, after_id: int = 0) -> list[TaskEvent]:
        store = (await self._wait_ready()).store
        await store.get_task(task_id)
        return await store.events(task_id, after_id)

    async def tenant_events(self, tenant: str, after_id: int = 0) -> list[TaskEvent]:
        """The events of `tenant`'s tasks after `after_id`, in id order, a page at a time."""
        return await (await self._wait_ready()).store.tenant_events(tenant, after_id)

    async def last_event_id(self) -> int:
        """The newest event's id: where a stream that starts now resumes from."""
        return await (await self._wait_ready()).store.last_event_id()

    async def cancel(self, task_id: str) -> Task:
        """Cancel a queued or running task. A finished task cannot be cancelled (`Conflict`)."""
        lifecycle = await self._wait_ready()
        live = lifecycle.live.get(task_id)
        if live is None:
            task = await lifecycle.store.get_task(task_id)
            raise Conflict(f"task {task_id} is already {task.status.value}",
                           {"status": task.status.value})
        if live.status is TaskStatus.QUEUED and self._unqueue(live):
            await lifecycle.cancelled_while_queued(live)
        else:
            live.cancel_requested = True
            if live.replica_handle is not None:
                self.backend.call(live.replica_handle, "cancel", task_id, name=live.replica or "")
            try:
                await asyncio.wait_for(live.done.wait(), 10.0)
            except asyncio.TimeoutError:
                pass
        return await lifecycle.store.get_task(task_id)

    def _unqueue(self, live: LiveTask) -> bool:
        if live.agent_type is None:
            return self.routing is not None and self.routing.remove(live.id)
        return self.queues[live.agent_type].remove(live.id)

    async def requeue(self, task_id: str) -> Task:
        """Give a dead-lettered task a fresh budget of attempts; its history is kept."""
        lifecycle = await self._wait_ready()
        task = await lifecycle.store.get_task(task_id)
        if task.status is not TaskStatus.DEAD:
            raise Conflict(f"only dead tasks can be requeued; task {task_id} is "
                           f"{task.status.value}", {"status": task.status.value})
        if task.agent_type not in self.agent_types:
            raise Conflict(f"agent type {task.agent_type!r} is no longer registered")
        reserved = self._reserve([task.tenant])
        try:
            live = await lifecycle.requeue(task)
        finally:
            self._release(reserved)
        self.queues[live.agent_type].push(live.id, live.priority)
        self._wake()
        return await lifecycle.store.get_task(task_id)

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
            "queued": {name: len(queue) for name, queue in self.queues.items()},
            "running": sum(1 for t in lifecycle.live.values() if t.status is TaskStatus.RUNNING),
            "tasks": await lifecycle.store.count_by_status(),
            "pools": self.pools.snapshot(),
            "routing": self._routing_snapshot(),
            "agent_types": {name: dataclasses.asdict(cls.spec)
                            for name, cls in self.agent_types.items()},
        }

    def _routing_snapshot(self) -> dict[str, Any]:
        if self.routing is None:
            return {"enabled": False}
        return {"enabled": True, "fallback_agent_type": self.config.router.fallback_agent_type,
                **self.routing.snapshot()}

    async def feedback(self, task_id: str, agent_type: str) -> dict[str, Any]:
        """Tell the router that task `task_id` should have gone to `agent_type`: its description
        becomes a labelled example of the task's tenant (stored; it outlives router restarts),
        replacing only that tenant's examples."""
        lifecycle = await self._wait_ready()
        if self.routing is None:
            raise Conflict("routing is switched off (YMERA_ROUTER_ENABLED=false): there is no "
                           "router to teach")
        if not isinstance(agent_type, str) or agent_type not in self.agent_types:
            raise InvalidRequest(
                f"unknown agent_type {agent_type!r}; known types: "
                f"{', '.join(sorted(self.agent_types))}", {"agent_type": agent_type})
        task = await lifecycle.store.get_task(task_id)
        outcome = await self._ask_router("feedback", task.description, agent_type, task_id,
                                         task.tenant)
        await lifecycle.feedback_recorded(task, outcome)
        return outcome

    async def route(self, description: str, tenant: str = "default") -> RouteDecision:
        """Which agent type would take `description` of `tenant` now, and why (from the shared
        examples and that tenant's own); nothing is stored or run. A decision with `routed`
        false is "no confident route"."""
        await self._wait_ready()
        if self.routing is None:
            raise Conflict("routing is switched off (YMERA_ROUTER_ENABLED=false)")
        check_description(description)
        check_tenant(tenant)
        (decision,) = await self._ask_router("decide_many", [description], self._load(),
                                             [tenant])
        return decision

    async def router_state(self, tenant: str = "default") -> dict[str, Any]:
        """What the router knows for `tenant` (examples per type and source, that tenant's
        own counted, policy, statistics) and how its line of waiting tasks stands."""
        await self._wait_ready()
        if self.routing is None:
            return {"enabled": False}
        check_tenant(tenant)
        return {**self._routing_snapshot(), **await self._ask_router("describe", tenant)}

    async def _ask_router(self, method: str, *args: Any) -> Any:
        assert self.routing is not None
        try:
            return await self.routing.router.call(method, *args)
        except CallFailed as exc:
            raise PlatformUnavailable(f"the router failed: {exc}") from None
        except (ReplicaLost, CallTimedOut, CallCancelled) as exc:
            raise PlatformUnavailable(f"the router is not answering ({exc}); it is being "
                                      "restarted, try again shortly") from None

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
        for queue in self.queues.values():
            while queue.pop() is not None:
                pass
        running = sum(1 for t in lifecycle.live.values() if t.status is TaskStatus.RUNNING)
        await lifecycle.writer.stop()
        if self.publisher is not None:
            await self.publisher.close()
        return {"running": running, "queued_left": lifecycle.queued_count}

    async def stop_pools(self) -> int:
        """Kill every replica and the router (for `ymera down`, after `drain`). Returns how
        many replicas."""
        if self.routing is not None:
            self.backend.kill(self.routing.router.handle)
        killed = 0
        for pool in self.pools.pools.values():
            pool.set_bounds(0, 0)
            for replica in list(pool.replicas.values()):
                self.backend.kill(replica.handle)
                killed += 1
            pool.replicas.clear()
        return killed

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

    async def agent_stats(self, window_s: float = 3600.0, tenant: str | None = None
                          ) -> dict[str, dict[str, Any]]:
        """Per agent type over the last `window_s`: outcomes, success rate, retries, durations;
        with `tenant`, of that tenant's tasks only."""
        if not 0 < window_s <= 30 * 86400:
            raise InvalidRequest("window_s must be above 0 and at most 30 days")
        store = (await self._wait_ready()).store
        return await store.agent_stats(utcnow() - timedelta(seconds=window_s), tenant)

    async def task_counts(self, tenant: str) -> dict[str, int]:
        """`tenant`'s tasks per status (what a tenant may know of the platform's counts)."""
        return await (await self._wait_ready()).store.count_by_status(tenant)

    async def inbox(self, agent_type: str, include_acked: bool = False, limit: int = 50,
                    cursor: str | None = None, tenant: str = "default") -> dict[str, Any]:
        """`tenant`'s messages delivered to `agent_type`'s inbox (by the communication agent),
        oldest first."""
        messages, next_cursor = await (await self._inbox()).list(
            agent_type, tenant=tenant, include_acked=include_acked, limit=limit, cursor=cursor)
        return {"messages": messages, "next_cursor": next_cursor}

    async def ack_message(self, message_id: str, tenant: str = "default") -> Any:
        """Acknowledge `tenant`'s message; `NotFound` for another tenant's."""
        return await (await self._inbox()).ack(message_id, tenant=tenant)

    async def _inbox(self) -> Any:
        await self._wait_ready()
        if self._inbox_store is None:
            from storage.inbox import InboxStore

            self._inbox_store = await InboxStore.open(self.config.database_url)
        return self._inbox_store

    async def pid(self) -> int:
        return os.getpid()

    async def replica_pids(self) -> dict[str, int | None]:
        """Process id of each live replica (operators and failure tests use these)."""
        return {r.name: r.pid for p in self.pools.pools.values() for r in p.replicas.values()}

    # ----------------------------------------------------------------- batches

    async def batch_status(self, batch_id: str, tenant: str = "default") -> Any:
        """How batch `batch_id` of `tenant` stands: a `storage.messages.BatchStatus` (counts
        by status of the tasks it created). `NotFound` when that tenant has no task in it, so
        another tenant's batch looks exactly like a missing one."""
        from actors.validation import NAME

        for field, value in (("batch_id", batch_id), ("tenant", tenant)):
            if not isinstance(value, str) or not NAME.match(value):
                raise InvalidRequest(f"{field} must be 1 to 64 letters, digits, '_', '.', ':' "
                                     "or '-'", {"field": field})
        return await (await self._wait_ready()).store.batch_status(batch_id, tenant)
