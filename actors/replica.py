"""One replica of an agent type: the Ray actor that hosts an agent and runs its attempts.

A replica never lets an agent's exception escape: every attempt comes back as an `AgentResult`
that says whether it succeeded, and if not, why and whether another attempt may help, with its
wall time and the CPU time the agent used for it (see `actors.cpu_meter` for what that counts).
Only the replica's own death (crash, kill, OOM, node loss) reaches the orchestrator as an actor
error. A result that is not JSON, or that nests deeper than `AgentContext.max_result_depth`,
fails its attempt (`invalid_result`, never retried) and is never recorded. Everything logged
during an attempt carries its task, attempt, agent type, tenant and replica
(`actors.logs.log_context`). The agent gets its `ClusterFacts`, `LanguageModels` and
`TaskOutput` ports from the replica: the ones given, or on Ray the namespace's
(`actors.cluster_facts`, `actors.llm_port`); outside Ray and without them, None.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from actors import cpu_meter
from actors.agent import (
    Agent, ClusterFacts, LanguageModels, TaskOutput, require_payload_within,
)
from actors.cpu_meter import CpuMeter, metered
from actors.errors import AgentError
from actors.logs import configure_logging, log_context
from storage.messages import AgentContext, AgentResult, AgentTask, TaskError
from storage.storable import MAX_DEPTH_CEILING, depth_excess, unreadable_marker


def error_of(exc: BaseException) -> TaskError:
    if isinstance(exc, AgentError):
        return TaskError(exc.code, exc.message, exc.retryable, type(exc).__name__,
                         _json_safe(exc.details))
    return TaskError("agent_crashed", f"{type(exc).__name__}: {exc}", True, type(exc).__name__)


def _json_safe(details: dict[str, Any]) -> dict[str, Any]:
    if depth_excess(details, MAX_DEPTH_CEILING) is not None:
        return unreadable_marker()
    try:
        return json.loads(json.dumps(details, default=str))
    except (TypeError, ValueError):
        return {}


def _json_error(value: Any, max_depth: int) -> TaskError | None:
    """Why the agent's result cannot be recorded (not JSON, or nested deeper than the limit,
    which would make every page showing the task fail), or None."""
    if (too_deep := depth_excess(value, max_depth, "result")) is not None:
        return TaskError("invalid_result", f"the agent returned a result nested deeper than "
                         f"{max_depth} levels at {too_deep}", False, "ValueError",
                         {"path": too_deep, "limit": max_depth})
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return TaskError("invalid_result", f"the agent returned a result that is not JSON: {exc}",
                         False, type(exc).__name__)
    return None


def _ray_node_id() -> str | None:
    """The Ray node this process runs on, when it runs inside Ray (this module does not
    import Ray itself, so that it can be used without)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def _ray_cluster_facts(namespace: str, node_id: str | None) -> ClusterFacts | None:
    """The namespace's cluster facts when this replica runs inside Ray, else None."""
    if node_id is None:
        return None
    from actors.cluster_facts import RayClusterFacts  # imports Ray, which this module does not

    return RayClusterFacts(namespace)


def _ray_ports(namespace: str, node_id: str | None
               ) -> tuple[LanguageModels | None, TaskOutput | None]:
    """The namespace's model gateway and task output ports inside Ray, else (None, None)."""
    if node_id is None:
        return None, None
    from actors.llm_port import RayLanguageModels, RayTaskOutput  # imports Ray

    return RayLanguageModels(namespace), RayTaskOutput(namespace)


class AgentReplica:
    """Hosts one agent instance; safe to call concurrently up to the agent's concurrency."""

    def __init__(self, agent_class: type[Agent], context: AgentContext,
                 max_payload_bytes: int, cluster: ClusterFacts | None = None,
                 llm: LanguageModels | None = None, events: TaskOutput | None = None) -> None:
        configure_logging(context.log_format, context.log_level)
        self.node_id = _ray_node_id()
        self.agent = agent_class()
        self.agent.context = context
        self.agent.cluster = cluster if cluster is not None else _ray_cluster_facts(
            context.namespace, self.node_id)
        ray_llm, ray_events = _ray_ports(context.namespace, self.node_id)
        self.agent.llm = llm if llm is not None else ray_llm
        self.agent.events = events if events is not None else ray_events
        self.replica = context.replica
        self.max_payload_bytes = max_payload_bytes
        self.max_result_depth = context.max_result_depth
        self.in_flight = 0
        self.completed = 0
        self.started_at = time.time()
        self._setup_done = False
        self._setup_lock = asyncio.Lock()
        self._running: dict[str, asyncio.Task[Any]] = {}

    async def ready(self) -> dict[str, Any]:
        """Run the agent's setup once; raises if the agent cannot start."""
        async with self._setup_lock:
            if not self._setup_done:
                await self.agent.setup()
                self._setup_done = True
        return await self.health()

    async def health(self) -> dict[str, Any]:
        await self.agent.health()
        return {"replica": self.replica, "pid": os.getpid(), "node_id": self.node_id,
                "in_flight": self.in_flight, "completed": self.completed,
                "uptime_s": time.time() - self.started_at}

    async def run_many(self, tasks: list[AgentTask]) -> list[AgentResult]:
        """Run several attempts concurrently; one result each, in order. The orchestrator
        sends a backlog in batches so that one Ray call carries many small tasks."""
        return list(await asyncio.gather(*(self.run(task) for task in tasks)))

    async def cancel(self, task_id: str) -> bool:
        """Cancel the running attempt of `task_id`, if this replica has one."""
        running = self._running.get(task_id)
        if running is None:
            return False
        running.cancel()
        return True

    async def run(self, task: AgentTask) -> AgentResult:
        cpu_meter.install(asyncio.get_running_loop())
        with log_context(task_id=task.task_id, attempt=task.attempt, agent_type=task.agent_type,
                         tenant=task.tenant, replica=self.replica):
            return await self._attempt(task, CpuMeter())

    async def _attempt(self, task: AgentTask, meter: CpuMeter) -> AgentResult:
        started = time.perf_counter()
        self.in_flight += 1
        current = asyncio.current_task()
        if current is not None:
            self._running[task.task_id] = current
        try:
            if not self._setup_done:
                await self.ready()
            require_payload_within(task.payload, self.max_payload_bytes)
            value = await asyncio.wait_for(metered(self.agent.run(task), meter),
                                           timeout=task.timeout_s)
            error = _json_error(value, self.max_result_depth)
            if error is None:
                return AgentResult(task.task_id, task.attempt, self.replica, True, value,
                                   duration_s=time.perf_counter() - started, cpu_s=meter.cpu_s)
        except asyncio.TimeoutError:
            error = TaskError("timeout", f"the agent took longer than {task.timeout_s:g}s",
                              True, "TimeoutError")
        except asyncio.CancelledError:
            error = TaskError("cancelled", "cancelled while running", False, "CancelledError")
        except Exception as exc:
            error = error_of(exc)
        finally:
            self._running.pop(task.task_id, None)
            self.in_flight -= 1
            self.completed += 1
        return AgentResult(task.task_id, task.attempt, self.replica, False, error=error,
                           duration_s=time.perf_counter() - started, cpu_s=meter.cpu_s)
