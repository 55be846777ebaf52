"""How the HTTP API reaches the orchestrator: its typed interface, in process or over Ray.

    port: PlatformPort = orchestrator                   # tests, embedding: same object, same loop
    port: PlatformPort = ActorPort(orchestrator_handle) # inside Ray Serve: the actor's handle
    task = await port.get(task_id)

`PlatformPort` is `actors.orchestrator_api.OrchestratorApi`: an in-process `Orchestrator` is
one, and `ActorPort` is the same operations over a Ray handle.

Guarantees: whatever the port, a platform error (`storage.errors.YmeraError`) raised by the
orchestrator reaches the caller as itself, so the API maps it to HTTP in one place. Over Ray,
the task error wrapping it is removed; an orchestrator that is dead or unreachable is
`PlatformUnavailable` (`actors.orchestrator_api.ray_errors_translated`, the one translation).
Ray is imported only when an `ActorPort` is used.
"""

from __future__ import annotations

from actors.orchestrator_api import ActorOrchestrator as ActorPort
from actors.orchestrator_api import OrchestratorApi as PlatformPort

__all__ = ["ActorPort", "PlatformPort"]
