"""Agents and routing over HTTP: what agent types and pools exist, scaling, and route queries.

Guarantees: the agents view shows platform-wide pools and queues but no task counts of any
tenant, and replica names, pids and Ray node ids only to a `platform:read` caller (others see
each pool's live and desired replicas, bounds and load); the stats count the caller's tenant's
tasks only; scaling a pool (shared by every tenant) takes `platform:scale` and is written to
the platform's audit log; a route query stores and runs nothing, and is decided (and
explained) from the shared declared examples and the caller's tenant's own learned and
feedback examples only.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from serve_apps.routes.access import (
    PLATFORM_AUDIT_TENANT, Caller, audit, authorize, services,
)
from serve_apps.schemas import RouteBody, ScaleBody

router = APIRouter(tags=["agents"], dependencies=[Depends(authorize)])

_AGENT_TYPE_FIELDS = ("name", "description", "capabilities", "resources", "concurrency",
                      "replicas", "payload_hint")


def shared_pool_health(pool: dict[str, Any]) -> dict[str, Any]:
    """What every tenant may see of a pool: its size, bounds and load, not its processes
    (no replica names, pids or Ray node ids)."""
    shared = {k: v for k, v in pool.items() if k != "replicas"}
    replicas = pool.get("replicas", [])
    shared["ready"] = sum(1 for r in replicas if r.get("ready"))
    shared["in_flight"] = sum(r.get("in_flight", 0) for r in replicas)
    return shared


@router.post("/route", summary="Which agent type would take this description (nothing runs)")
async def route(body: RouteBody, request: Request, caller: Caller) -> dict[str, Any]:
    decision = await services(request).port.route(body.description, caller.tenant)
    return decision.to_json()


@router.get("/agents", summary="Agent types, their pools and queues")
async def agents(request: Request, caller: Caller) -> dict[str, Any]:
    status = await services(request).port.status()
    return {
        "accepting": status["accepting"],
        "agent_types": {name: {k: spec[k] for k in _AGENT_TYPE_FIELDS if k in spec}
                        for name, spec in status["agent_types"].items()},
        "pools": (status["pools"] if caller.can("platform:read")
                  else [shared_pool_health(pool) for pool in status["pools"]]),
        "queued": status["queued"],
        "running": status["running"],
        "queue_max": status["queue_max"],
        "routing": {"enabled": bool(status["routing"].get("enabled"))},
    }


@router.get("/agents/stats",
            summary="Your tenant's outcomes, success rate and durations per agent type")
async def agent_stats(request: Request, caller: Caller,
                      window_s: Annotated[float, Query(gt=0, le=30 * 86400)] = 3600.0
                      ) -> dict[str, Any]:
    return {"window_s": window_s,
            "agent_types": await services(request).port.agent_stats(window_s, caller.tenant)}


@router.post("/agents/{agent_type}/scale",
             summary="Pin a pool's size, set its autoscaling bounds, or reset them")
async def scale(agent_type: str, body: ScaleBody, request: Request,
                caller: Caller) -> dict[str, Any]:
    svc = services(request)
    pool = await svc.port.scale(agent_type, body.replicas,
                                min_replicas=body.min_replicas, max_replicas=body.max_replicas,
                                reset=body.reset)
    await audit(request, PLATFORM_AUDIT_TENANT, caller.subject, "pool_scaled",
                target=agent_type, details=body.model_dump(exclude_defaults=True))
    return pool
