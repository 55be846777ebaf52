"""What every router shares: which descriptions can be routed, and the route to a type the
submitter named. The semantic router itself is `ml.semantic_router`; its actor, `ml.router_service`.
"""

from __future__ import annotations

from collections.abc import Collection

from storage.errors import InvalidRequest
from storage.messages import RouteDecision

MAX_DESCRIPTION_CHARS = 10_000


def check_description(description: object) -> str:
    """`description` if it can be routed; `InvalidRequest` saying why not otherwise."""
    if not isinstance(description, str) or not description.strip():
        raise InvalidRequest("a task description must be a non-empty string",
                             {"field": "description"})
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidRequest(f"the description is {len(description)} characters; the limit is "
                             f"{MAX_DESCRIPTION_CHARS}", {"field": "description"})
    return description


def requested_route(requested: str, agent_types: Collection[str]) -> RouteDecision:
    """The route to the agent type a submitter named, which must be registered."""
    if requested not in agent_types:
        raise InvalidRequest(
            f"unknown agent_type {requested!r}; known types: {', '.join(sorted(agent_types))}",
            {"agent_type": requested, "agent_types": sorted(agent_types)},
        )
    return RouteDecision(agent_type=requested, confidence=1.0, candidates=((requested, 1.0),),
                         reason="requested")
