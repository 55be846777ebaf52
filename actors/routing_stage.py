"""Tasks waiting for the router: decided in batches, retried when the router fails, never dropped.

A task that names no agent type is committed as queued without one, then waits here, highest
priority first, then oldest. The stage sends the router one batch at a time (up to `batch_max`
descriptions, each with its task's tenant, with each type's current load) and hands each
decision to the orchestrator.

When the router is lost, restarting or slow, the batch keeps its place at the front of the line
and the stage asks again after a backoff (0.5 s doubling to 5 s): the tasks stay queued, durable
in storage, for as long as it takes. When the router answers a batch with an error of its own,
the tasks of that batch are asked about one at a time, so one task that makes the router fail
cannot hold up the rest; a task the router fails on `MAX_DECISION_ERRORS` times is handed back
with the error (the orchestrator fails it with `router_error`).

Tasks that succeeded on a confident semantic route are reported to the router in the background
(`learned`, with their tenant, whose examples they become), at most `LEARN_BATCH` at a time;
learning is best effort and bounded.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from actors.errors import CallCancelled, CallFailed, CallTimedOut, ReplicaLost
from actors.lifecycle import LiveTask
from actors.task_queue import TaskQueue
from storage.messages import RouteDecision, TaskStatus

log = logging.getLogger("ymera.routing")

BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
MAX_DECISION_ERRORS = 3
LEARN_BATCH = 256
LEARN_BACKLOG = 10_000
LEARN_INTERVAL_S = 1.0

Decided = Callable[[LiveTask, RouteDecision | None, str | None], Awaitable[None]]


class RouterClient:
    """Calls the router actor through the backend, with a deadline."""

    def __init__(self, backend: Any, handle: Any, timeout_s: float) -> None:
        self.backend = backend
        self.handle = handle
        self.timeout_s = timeout_s

    async def call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        remote = self.backend.call(self.handle, method, *args, name="router")
        return await remote.result(timeout_s or self.timeout_s)


class RoutingStage:
    """The line of tasks waiting for a route, and the loop that gets them decided.

    `on_decided(live, decision, error)` gets each task's decision, or None and the router's
    error message once the router has failed on it `MAX_DECISION_ERRORS` times. `load()` gives
    each agent type's busy fraction, sent along with every batch."""

    def __init__(self, router: RouterClient, on_decided: Decided,
                 load: Callable[[], dict[str, float]], batch_max: int) -> None:
        self.router = router
        self.on_decided = on_decided
        self.load = load
        self.batch_max = batch_max
        self.waiting = TaskQueue()
        self.live: dict[str, LiveTask] = {}
        self.deciding: set[str] = set()
        self.failures = 0
        self.last_error: str | None = None
        self._retry: list[LiveTask] = []
        self._one_at_a_time: set[str] = set()
        self._errors: collections.Counter[str] = collections.Counter()
        self._wakeup = asyncio.Event()
        self._learned: collections.deque[tuple[str, str, str, float, str]] = collections.deque(
            maxlen=LEARN_BACKLOG)

    def __len__(self) -> int:
        return len(self.live)

    def push(self, live: LiveTask) -> None:
        self.live[live.id] = live
        self.waiting.push(live.id, live.priority)
        self._wakeup.set()

    def remove(self, task_id: str) -> bool:
        """Take a task out of the line (it was cancelled); False if it is being decided now."""
        if task_id in self.deciding:
            return False
        self._retry = [live for live in self._retry if live.id != task_id]
        self.waiting.remove(task_id)
        return self.live.pop(task_id, None) is not None

    def learned(self, live: LiveTask) -> None:
        """Report that `live` succeeded on its semantic route (sent in the background)."""
        self._learned.append((live.id, live.description, live.agent_type or "",
                              live.route_confidence, live.tenant))

    def snapshot(self) -> dict[str, Any]:
        return {"waiting": len(self.live), "deciding": len(self.deciding),
                "consecutive_failures": self.failures, "last_error": self.last_error}

    # ----------------------------------------------------------------- deciding

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while True:
                batch = self._next_batch()
                if not batch:
                    break
                if not await self._decide(batch):
                    await asyncio.sleep(BACKOFF_S[min(self.failures, len(BACKOFF_S)) - 1])

    def _next_batch(self) -> list[LiveTask]:
        batch, self._retry = self._retry, []
        if batch:
            if len(batch) > 1 and any(live.id in self._one_at_a_time for live in batch):
                self._retry = batch[1:]
                batch = batch[:1]
            return batch
        while len(batch) < self.batch_max:
            task_id = self.waiting.pop()
            if task_id is None:
                break
            live = self.live.get(task_id)
            if live is None or live.status is not TaskStatus.QUEUED:
                self.live.pop(task_id, None)
                continue
            if task_id in self._one_at_a_time and batch:
                self._retry.append(live)
                break
            batch.append(live)
            if task_id in self._one_at_a_time:
                break
        return batch

    async def _decide(self, batch: list[LiveTask]) -> bool:
        """Ask the router about `batch`; False when it could not answer (try again later)."""
        self.deciding.update(live.id for live in batch)
        try:
            decisions = await self.router.call(
                "decide_many", [live.description for live in batch], self.load(),
                [live.tenant for live in batch])
        except Exception as exc:  # lost, timed out, or the router raised: see `_failed`
            return await self._failed(batch, exc)
        finally:
            self.deciding.difference_update(live.id for live in batch)
        self.failures = 0
        for live, decision in zip(batch, decisions):
            self.live.pop(live.id, None)
            self._one_at_a_time.discard(live.id)
            self._errors.pop(live.id, None)
            await self.on_decided(live, decision, None)
        return True

    async def _failed(self, batch: list[LiveTask], exc: BaseException) -> bool:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        router_raised = isinstance(exc, CallFailed) or not isinstance(
            exc, (ReplicaLost, CallTimedOut, CallCancelled))
        log.warning("routing %d tasks failed (%s); retrying", len(batch), self.last_error)
        if router_raised and len(batch) == 1:
            live = batch[0]
            self._errors[live.id] += 1
            if self._errors[live.id] >= MAX_DECISION_ERRORS:
                self.live.pop(live.id, None)
                self._one_at_a_time.discard(live.id)
                self._errors.pop(live.id, None)
                await self.on_decided(live, None, self.last_error)
                return True
        elif router_raised:
            self._one_at_a_time.update(live.id for live in batch)
        self._retry = [live for live in batch if live.id in self.live] + self._retry
        return False

    # ----------------------------------------------------------------- learning

    async def run_learning(self) -> None:
        while True:
            await asyncio.sleep(LEARN_INTERVAL_S)
            while self._learned:
                outcomes = [self._learned.popleft()
                            for _ in range(min(LEARN_BATCH, len(self._learned)))]
                try:
                    await self.router.call("learn", outcomes)
                except Exception as exc:
                    log.warning("reporting %d outcomes to the router failed: %s",
                                len(outcomes), exc)
                    break
