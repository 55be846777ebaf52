"""How the HTTP API reaches the orchestrator: one awaitable call, in process or over Ray.

    port = LocalPort(orchestrator)          # tests, embedding: the same object, same loop
    port = ActorPort(orchestrator_handle)   # inside Ray Serve: a detached actor's handle
    task = await port.call("get", task_id)

Guarantees: whatever the port, a platform error (`storage.errors.YmeraError`) raised by the
orchestrator reaches the caller as itself, so the API maps it to HTTP in one place. Over Ray,
the task error wrapping it is removed; any other failure of the call (the actor died, is
unreachable) becomes `PlatformUnavailable`. Ray is imported only by `ActorPort`.
"""

from __future__ import annotations

from typing import Any, Protocol

from actors.errors import PlatformUnavailable
from storage.errors import YmeraError


class PlatformPort(Protocol):
    """Calls one client-API method of the orchestrator and returns its result."""

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any: ...


class LocalPort:
    """Calls an in-process `Orchestrator` directly (no serialisation, no Ray)."""

    def __init__(self, orchestrator: Any) -> None:
        self.orchestrator = orchestrator

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.orchestrator, method)(*args, **kwargs)


class ActorPort:
    """Calls the orchestrator actor through its Ray handle and unwraps platform errors."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import ray

        try:
            return await getattr(self.handle, method).remote(*args, **kwargs)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, YmeraError):
                raise cause from None
            raise exc.as_instanceof_cause() from None
        except ray.exceptions.RayActorError as exc:
            raise PlatformUnavailable(
                f"the orchestrator is not answering: {type(exc).__name__}") from exc
