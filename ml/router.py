"""Deciding which agent type takes a task.

`ExplicitRouter` honours the agent type the submitter named. It is the routing step the
orchestrator calls for every task; the semantic ML router keeps the same `decide` call.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from ml.errors import NoConfidentRoute
from storage.errors import InvalidRequest
from storage.messages import RouteDecision


class Router(Protocol):
    async def decide(
        self, description: str, payload: dict[str, Any], requested: str | None
    ) -> RouteDecision: ...


class ExplicitRouter:
    """Routes each task to the agent type it names; without one there is no route."""

    def __init__(self, agent_types: Collection[str]) -> None:
        self.agent_types = set(agent_types)

    async def decide(
        self, description: str, payload: dict[str, Any], requested: str | None
    ) -> RouteDecision:
        if requested is None:
            raise NoConfidentRoute(
                "this task names no agent_type and no router is configured to choose one; "
                f"name one of: {', '.join(sorted(self.agent_types))}",
                {"agent_types": sorted(self.agent_types)},
            )
        return requested_route(requested, self.agent_types)


def requested_route(requested: str, agent_types: Collection[str]) -> RouteDecision:
    """The route to the agent type a submitter named, which must be registered."""
    if requested not in agent_types:
        raise InvalidRequest(
            f"unknown agent_type {requested!r}; known types: {', '.join(sorted(agent_types))}",
            {"agent_type": requested, "agent_types": sorted(agent_types)},
        )
    return RouteDecision(agent_type=requested, confidence=1.0, candidates=((requested, 1.0),),
                         reason="requested")
