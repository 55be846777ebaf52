"""Dispatch: the queues of tasks that have an agent type, and the attempts that run them.

A woken dispatcher hands ready tasks to the least-loaded live replicas of their type, several
per call when there is a backlog, and records what comes back through the lifecycle: a result,
or the attempt's loss (the replica died, timed out, or the call was cancelled). An outcome is
recorded only for the task's current attempt (fencing), so a late answer of an older attempt
never overwrites a newer one.

What is durable: nothing here. Every transition is recorded by `Lifecycle`, which commits it.
What is rebuilt: the queues (on start, `Lifecycle.reconcile` hands back every queued task and
the orchestrator enqueues it again) and each replica's in-flight count (attempts lost with the
previous incarnation are retried or dead-lettered by the reconcile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from actors.backend import Backend, RemoteCall
from actors.errors import CallCancelled, CallTimedOut, ReplicaLost
from actors.lifecycle import Lifecycle, LiveTask
from actors.pools import AgentPool, PoolManager, Replica
from actors.routing_stage import RoutingStage
from actors.task_queue import TaskQueue
from storage.messages import AgentResult, AgentTask, TaskError, TaskStatus

log = logging.getLogger("ymera.orchestrator")

MAX_DISPATCH_BATCH = 32

Spawn = Callable[[Coroutine[Any, Any, None], str], Any]


def timeout_grace_s(timeout_s: float) -> float:
    """How long past a task's timeout the orchestrator waits before it calls the replica hung."""
    return 1.0 + 0.1 * timeout_s


class Dispatcher:
    """One queue per agent type, and the loop that empties them into the pools. `lifecycle`
    is set once storage is open; `spawn(coroutine, name)` runs a background task of the
    orchestrator."""

    def __init__(self, agent_types: dict[str, Any], pools: PoolManager, backend: Backend,
                 routing: RoutingStage | None, spawn: Spawn) -> None:
        self.pools = pools
        self.backend = backend
        self.routing = routing
        self.spawn = spawn
        self.queues = {name: TaskQueue() for name in agent_types}
        self.lifecycle: Lifecycle | None = None
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Ask for a dispatch step soon (something was queued, or a replica freed up)."""
        self._wakeup.set()

    async def update(self) -> None:
        """The control loop's step: dispatch whatever became ready since the last wake."""
        self.wake()

    def queued(self) -> dict[str, int]:
        """How many tasks wait for each agent type."""
        return {name: len(queue) for name, queue in self.queues.items()}

    def push(self, live: LiveTask, not_before: float | None = None) -> None:
        """Queue a task that has an agent type (at `not_before`, a monotonic time, if given)."""
        assert live.agent_type is not None
        self.queues[live.agent_type].push(live.id, live.priority, not_before=not_before)
        self.wake()

    async def enqueue(self, live: LiveTask) -> None:
        """Queue a task for its pool, or for the router when it has no agent type yet (it
        fails as unroutable when routing is off)."""
        assert self.lifecycle is not None
        if live.agent_type is not None:
            self.queues[live.agent_type].push(live.id, live.priority)
        elif self.routing is not None:
            self.routing.push(live)
        else:
            await self.lifecycle.unroutable(live, None, TaskError(
                "no_route", "this task names no agent_type and routing is switched off"))

    def unqueue(self, live: LiveTask) -> bool:
        """Take a waiting task out of its queue (or the router's line); False if not there."""
        if live.agent_type is None:
            return self.routing is not None and self.routing.remove(live.id)
        return self.queues[live.agent_type].remove(live.id)

    def clear(self) -> None:
        """Forget every queued task (they stay queued in storage)."""
        for queue in self.queues.values():
            while queue.pop() is not None:
                pass

    def load(self) -> dict[str, float]:
        """How busy each agent type's pool is: in-flight calls over capacity (1 when empty)."""
        load = {}
        for name, pool in self.pools.pools.items():
            capacity = pool.live_count() * pool.concurrency
            busy = sum(r.in_flight for r in pool.replicas.values())
            load[name] = min(1.0, busy / capacity) if capacity else 1.0
        return load

    async def run(self) -> None:
        """Dispatch on every wake, and when the earliest delayed retry becomes due."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
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
                loop.call_at(loop.time() + max(0.0, next_due - time.monotonic()), self.wake)

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

    def _start_attempts(self, batch: list[LiveTask], replica: Replica) -> None:
        assert self.lifecycle is not None
        attempts = self.lifecycle.attempts_started(batch, replica.name)
        replica.in_flight += len(batch)
        agent_tasks = []
        for live, attempt in zip(batch, attempts):
            assert live.agent_type is not None  # only routed tasks are queued
            agent_tasks.append(AgentTask(live.id, attempt, live.agent_type, live.description,
                                         live.payload, live.timeout_s, live.tenant))
        call = self.backend.call(replica.handle, "run_many", agent_tasks, name=replica.name,
                                 task_name=_task_name(batch))
        for live in batch:
            live.replica_handle = replica.handle
        self.spawn(self._finish_attempts(batch, attempts, replica, call), "attempts")

    async def _finish_attempts(self, batch: list[LiveTask], attempts: list[int],
                               replica: Replica, call: RemoteCall) -> None:
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
            self.wake()
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
                assert live.agent_type is not None
                self.queues[live.agent_type].push(live.id, live.priority, not_before=retry_at)
        if any(r is not None for r in retries):
            self.wake()

    def cancel_running(self, live: LiveTask) -> None:
        """Ask the replica running `live` to cancel it (the outcome arrives as usual)."""
        if live.replica_handle is not None:
            self.backend.call(live.replica_handle, "cancel", live.id, name=live.replica or "")


def _task_name(batch: list[LiveTask]) -> str | None:
    """The name the Ray dashboard shows for an attempt batch holding workflow steps: the agent
    type, then the run and step of its first workflow task (and how many more tasks ride
    along); None (Ray's default name) for a batch of plain tasks."""
    labelled = [live for live in batch if live.workflow_step]
    if not labelled:
        return None
    more = f" +{len(batch) - 1}" if len(batch) > 1 else ""
    return f"{labelled[0].agent_type} {labelled[0].workflow_step}{more}"
