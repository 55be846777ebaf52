"""Admission: which submissions the orchestrator takes, and how they become durable tasks.

A submission is checked whole before anything is stored (shape, size, the agent type it names,
whether routing can take a task that names none), deduplicated by idempotency key, held to the
queue's capacity and each tenant's quota, and committed all together or not at all.

What is durable: the tasks, committed through `Lifecycle.create`, and their idempotency keys
(stored with them, so a repeated key finds the earlier task after any restart).
What is rebuilt: everything here, which is in memory only and empty on start: the keys being
committed right now (a second submission with the same key waits for the first instead of
creating a twin) and the queue places held for tasks being committed (so two concurrent
submissions cannot both fit into the last place).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence

from actors.config import OrchestratorConfig
from actors.errors import QueueFull
from actors.events_out import check_callback_urls
from actors.lifecycle import Lifecycle, LiveTask
from actors.metrics import OrchestratorMetrics
from actors.validation import validate_request
from ml.errors import NoConfidentRoute
from ml.router import requested_route
from storage.errors import InvalidRequest
from storage.messages import RouteDecision, RouteMethod, Task, TaskRequest

MAX_SUBMISSION = 10_000


class Admission:
    """Accepts submissions into the lifecycle and hands each new task to `enqueue`.

    `routing` says whether a router takes tasks that name no agent type."""

    def __init__(self, config: OrchestratorConfig, agent_types: dict[str, type],
                 routing: bool, metrics: OrchestratorMetrics,
                 enqueue: Callable[[LiveTask], Awaitable[None]],
                 wake: Callable[[], None]) -> None:
        self.config = config
        self.agent_types = agent_types
        self.routing = routing
        self.metrics = metrics
        self.enqueue = enqueue
        self.wake = wake
        self.on_callbacks: Callable[[list[TaskRequest]], None] | None = None
        self._pending_keys: dict[tuple[str, str], asyncio.Future] = {}
        self._reserved = 0
        self._reserved_by_tenant: collections.Counter[str] = collections.Counter()

    async def accept(self, lifecycle: Lifecycle, requests: Sequence[TaskRequest | dict]
                     ) -> tuple[list[str], dict[str, Task]]:
        """The ids of `requests`' tasks in request order, once durable, and the tasks this
        call created, as committed, by id. A request whose idempotency key was seen before gets
        the earlier task's id and creates nothing. Raises `InvalidRequest` (naming the
        request's index), `NoConfidentRoute` or `QueueFull`, having stored nothing."""
        if not isinstance(requests, (list, tuple)) or not requests:
            raise InvalidRequest("submit at least one task")
        most = min(MAX_SUBMISSION, self.config.queue_max)
        if len(requests) > most:
            raise InvalidRequest(f"one submission may hold at most {most} tasks, not "
                                 f"{len(requests)}: split it", {"count": len(requests)})
        many = len(requests) > 1
        checked = [validate_request(r, self.config, i if many else None)
                   for i, r in enumerate(requests)]
        if any(r.callback_url is not None for r in checked):
            await check_callback_urls(checked, self.config, many)
            if self.on_callbacks is not None:
                self.on_callbacks(checked)
        decisions = [self.requested_route(r, i if many else None)
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
                key = (request.tenant, request.idempotency_key) if request.idempotency_key else None
                if key is not None and key in known:
                    ids[index] = known[key]
                    owned[key].set_result(known[key])
                else:
                    creating.append(index)
            reserved = self.reserve(lifecycle, [checked[i].tenant for i in creating])
            try:
                created = await lifecycle.create(
                    [(checked[i], decisions[i]) for i in creating])
            finally:
                self.release(reserved)
            for index, (live, task) in zip(creating, created):
                ids[index] = live.id
                committed[live.id] = task
                if live.agent_type is not None:
                    self.metrics.routed(live.agent_type, RouteMethod.REQUESTED.value)
                    self.metrics.task_submitted(live.agent_type, live.tenant)
                request = checked[index]
                if request.idempotency_key:
                    owned[(request.tenant, request.idempotency_key)].set_result(live.id)
                await self.enqueue(live)
            if created:
                self.wake()
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

    def requested_route(self, request: TaskRequest, index: int | None) -> RouteDecision | None:
        """The route to the type a request names (which must exist); None for the router."""
        if request.agent_type is not None:
            try:
                return requested_route(request.agent_type, self.agent_types)
            except InvalidRequest as exc:
                if index is None:
                    raise
                raise InvalidRequest(f"task {index}: {exc}", {**exc.details, "index": index}) \
                    from None
        if not self.routing:
            where = f"task {index}: " if index is not None else ""
            raise NoConfidentRoute(
                f"{where}this task names no agent_type and routing is switched off "
                f"(YMERA_ROUTER_ENABLED=false); name one of: {', '.join(sorted(self.agent_types))}",
                {"agent_types": sorted(self.agent_types)})
        return None

    def reserve(self, lifecycle: Lifecycle, tenants: list[str]) -> collections.Counter[str]:
        """Hold queue places for tasks of these tenants while they are committed, or raise
        `QueueFull` if the queue, or a tenant's quota of waiting tasks, has no room. Give the
        places back with `release` once the tasks are committed (or not)."""
        queued = lifecycle.queued_count + self._reserved
        if queued + len(tenants) > self.config.queue_max:
            raise QueueFull(
                f"the task queue is full ({queued} of {self.config.queue_max} waiting); "
                "retry later",
                {"queued": queued, "queue_max": self.config.queue_max},
                retry_after_s=1.0,
            )
        wanted = collections.Counter(tenants)
        quota = self.config.tenant_queue_max
        if quota is not None:
            for tenant, count in wanted.items():
                waiting = lifecycle.queued_by_tenant[tenant] + self._reserved_by_tenant[tenant]
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

    def release(self, reserved: collections.Counter[str]) -> None:
        self._reserved -= sum(reserved.values())
        self._reserved_by_tenant.subtract(reserved)
        for tenant in reserved:
            if self._reserved_by_tenant[tenant] <= 0:
                del self._reserved_by_tenant[tenant]
