"""What the orchestrator needs of the actor system: `Backend`, implemented by
`actors.ray_backend.RayBackend` on Ray and by an in-process stand-in in the tests.

A backend creates, finds, calls and kills actors of one namespace, and translates the actor
system's errors into the platform's: a call's `result` raises `ReplicaLost` (the actor died or
is unreachable), `CallFailed` (its method raised), `CallTimedOut` or `CallCancelled`, nothing
else of the actor system. Handles are opaque to the orchestrator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from actors.agent import Agent
    from actors.config import WebhookSettings
    from ml.config import RouterConfig
    from ml.llm.settings import LlmSettings
    from storage.messages import AgentContext, Resources


class RemoteCall(Protocol):
    """A call in flight to an actor."""

    async def result(self, timeout_s: float | None) -> Any:
        """The call's result, waiting at most `timeout_s` (errors as the module says)."""
        ...

    def cancel(self) -> None:
        """Cancel the call if it is still running; never raises."""
        ...


class Backend(Protocol):
    """Creates, finds, calls and kills the replicas and the router of one namespace."""

    def create_replica(self, name: str, agent_class: type[Agent], resources: Resources,
                       concurrency: int, context: AgentContext,
                       max_payload_bytes: int) -> Any:
        """Start a replica actor named `name` running `agent_class`; its handle."""
        ...

    def start_router(self, agent_types: dict[str, type[Agent]], config: RouterConfig,
                     database_url: str) -> Any:
        """The namespace's router actor, started if there is none; its handle."""
        ...

    def start_llm_gateway(self, settings: LlmSettings, database_url: str, redis_url: str | None,
                          log_format: str, log_level: str) -> Any:
        """The namespace's model gateway actor, started if there is none; its handle."""
        ...

    def start_webhook_delivery(self, settings: WebhookSettings, database_url: str,
                               log_format: str, log_level: str) -> Any:
        """The namespace's webhook delivery actor, started if there is none; its handle."""
        ...

    def find_actors(self, prefix: str) -> dict[str, Any]:
        """Live actors of the namespace whose names start with `prefix`, by name."""
        ...

    def call(self, handle: Any, method: str, *args: Any, name: str = "actor",
             task_name: str | None = None) -> RemoteCall:
        """Start calling `method` of the actor `handle` (`name` is for messages; `task_name`,
        when given, is what the Ray dashboard shows for the call)."""
        ...

    def kill(self, handle: Any) -> None:
        """Kill the actor for good; never raises (it may be dead already)."""
        ...
