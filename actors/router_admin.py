"""The orchestrator's side of routing: acting on the router's decisions, and the public
operations that ask or teach the router (`route`, `router_state`, `feedback`).

What is durable: a task's route, stored with it when its decision is acted on; feedback, stored
by the router as the tenant's examples (they outlive router restarts) and recorded as an event
of the task.
What is rebuilt: nothing here; the router rebuilds its index from storage when Ray restarts it.
A router that fails or does not answer is `PlatformUnavailable` to the caller.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from actors.errors import (
    CallCancelled,
    CallFailed,
    CallTimedOut,
    PlatformUnavailable,
    ReplicaLost,
    storage_trouble_unavailable,
)
from actors.metrics import NO_ROUTE
from actors.routing_stage import MAX_DECISION_ERRORS
from ml.errors import NoConfidentRoute
from ml.router import check_description
from storage.errors import Conflict, InvalidRequest
from storage.example_store import check_tenant
from storage.messages import RouteDecision, RouteMethod, TaskError, TaskStatus

if TYPE_CHECKING:
    from actors.config import OrchestratorConfig
    from actors.dispatch import Dispatcher
    from actors.lifecycle import Lifecycle, LiveTask
    from actors.metrics import OrchestratorMetrics
    from actors.routing_stage import RoutingStage

CANDIDATES_REPORTED = 3


class RouterAdministration:
    """Routing operations of `actors.orchestrator.Orchestrator` (a mixin over its `config`,
    `metrics`, `routing`, `dispatcher`, `agent_types` and `_wait_ready`)."""

    config: OrchestratorConfig
    metrics: OrchestratorMetrics
    routing: RoutingStage | None
    dispatcher: Dispatcher
    agent_types: dict[str, Any]
    lifecycle: Lifecycle | None

    if TYPE_CHECKING:
        async def _wait_ready(self) -> Lifecycle: ...

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
        confident = decision.routed and decision.agent_type in self.agent_types
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
        self.dispatcher.push(live)

    def _no_route_error(self, decision: RouteDecision) -> TaskError:
        return TaskError(
            "no_confident_route",
            f"no agent type is a confident match for this task ({decision.reason}); submit it "
            f"again naming an agent_type, one of: {', '.join(sorted(self.agent_types))}",
            False, NoConfidentRoute.__name__,
            {"candidates": [list(c) for c in decision.candidates[:CANDIDATES_REPORTED]],
             "confidence": decision.confidence, "similarity": decision.similarity,
             "nearest": [n.to_json() for n in decision.nearest]})

    def _routing_snapshot(self) -> dict[str, Any]:
        if self.routing is None:
            return {"enabled": False}
        return {"enabled": True, "fallback_agent_type": self.config.router.fallback_agent_type,
                **self.routing.snapshot()}

    @storage_trouble_unavailable
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

    @storage_trouble_unavailable
    async def route(self, description: str, tenant: str = "default") -> RouteDecision:
        """Which agent type would take `description` of `tenant` now, and why (from the shared
        examples and that tenant's own); nothing is stored or run. A decision with `routed`
        false is "no confident route"."""
        await self._wait_ready()
        if self.routing is None:
            raise Conflict("routing is switched off (YMERA_ROUTER_ENABLED=false)")
        check_description(description)
        check_tenant(tenant)
        (decision,) = await self._ask_router("decide_many", [description],
                                             self.dispatcher.load(), [tenant])
        return decision

    @storage_trouble_unavailable
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
