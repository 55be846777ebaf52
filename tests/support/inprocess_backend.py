"""An in-process `actors.backend.Backend`, standing in for `RayBackend`: replicas are plain
objects in this event loop. It lets the orchestrator's logic run in a unit test without a
cluster; the integration tests run the same logic on real Ray."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.errors import CallCancelled, CallTimedOut, ReplicaLost
from actors.replica import AgentReplica


class InProcessCall:
    def __init__(self, coroutine, replica: InProcessReplica, name: str) -> None:
        self.task = asyncio.ensure_future(coroutine)
        self.replica = replica
        self.name = name
        replica.calls.add(self.task)

    async def result(self, timeout_s: float | None) -> Any:
        try:
            return await asyncio.wait_for(asyncio.shield(self.task), timeout_s)
        except asyncio.TimeoutError:
            raise CallTimedOut(f"{self.name} did not answer") from None
        except asyncio.CancelledError:
            if not self.task.cancelled():
                raise  # the caller itself is being cancelled
            if self.replica.dead:
                raise ReplicaLost(f"{self.name} was lost") from None
            raise CallCancelled(f"the call to {self.name} was cancelled") from None

    def cancel(self) -> None:
        self.task.cancel()


class InProcessReplica:
    def __init__(self, replica: AgentReplica) -> None:
        self.replica = replica
        self.dead = False
        self.calls: set[asyncio.Future] = set()

    def die(self) -> None:
        self.dead = True
        for call in self.calls:
            call.cancel()


class InProcessBackend:
    """`router_factory(agent_types, config, database_url)` makes the router object (by default
    the real `RouterService`)."""

    def __init__(self, router_factory: Any = None) -> None:
        self.actors: dict[str, InProcessReplica] = {}
        self.router_factory = router_factory

    def create_replica(self, name, agent_class, resources, concurrency, context,
                       max_payload_bytes):
        self.actors[name] = InProcessReplica(AgentReplica(agent_class, context, max_payload_bytes))
        return self.actors[name]

    def start_router(self, agent_types, config, database_url):
        if "router" not in self.actors:
            factory = self.router_factory
            if factory is None:
                from ml.router_service import RouterService as factory
            specs = {name: agent.spec for name, agent in agent_types.items()}
            self.actors["router"] = InProcessReplica(factory(specs, config, database_url))
        return self.actors["router"]

    def start_llm_gateway(self, settings, database_url, redis_url, log_format, log_level):
        if "llm-gateway" not in self.actors:
            from actors.llm_gateway import LlmGatewayActor

            self.actors["llm-gateway"] = InProcessReplica(LlmGatewayActor(
                settings, database_url, redis_url, "in-process", log_format, log_level))
        return self.actors["llm-gateway"]

    def start_webhook_delivery(self, settings, database_url, log_format, log_level):
        if "ymera-webhook-delivery" not in self.actors:
            from actors.webhook_delivery import WebhookDeliveryActor

            self.actors["ymera-webhook-delivery"] = InProcessReplica(WebhookDeliveryActor(
                settings, database_url, log_format, log_level))
        return self.actors["ymera-webhook-delivery"]

    def find_actors(self, prefix: str) -> dict[str, Any]:
        return {n: h for n, h in self.actors.items() if n.startswith(prefix) and not h.dead}

    def call(self, handle: InProcessReplica, method: str, *args: Any, name: str = "actor",
             task_name: str | None = None):
        if handle.dead:
            async def lost():
                raise ReplicaLost(f"{name} was lost")
            return InProcessCall(lost(), handle, name)
        return InProcessCall(getattr(handle.replica, method)(*args), handle, name)

    def kill(self, handle: InProcessReplica) -> None:
        handle.die()
        running = getattr(handle.replica, "_running", None)  # the webhook delivery loop
        if isinstance(running, asyncio.Task):
            running.cancel()
        self.actors = {n: h for n, h in self.actors.items() if h is not handle}
