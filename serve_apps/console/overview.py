"""The overview: the platform at a glance for the signed-in tenant.

Guarantees:
- pools and queues are what `GET /api/v1/agents` shows the same caller (replica names, pids
  and nodes only with `platform:read`); failure rates and durations are the tenant's own
  (`GET /api/v1/agents/stats`, the last hour); the dead-letter count and the throughput chart
  count the tenant's tasks only; nothing of another tenant is shown;
- the dead-letter count reads at most `DEAD_COUNT_CAP` tasks (shown as "at least" beyond);
  the chart buckets the tenant's tasks created in the last hour by when they finished, from
  at most `CHART_SCAN` of the newest (it says so when it stopped there);
- the figures refresh every few seconds without reloading the page.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from serve_apps.console import rendering
from serve_apps.console.access import ConsoleCaller, ConsoleRoute, acting, is_htmx
from serve_apps.platform_port import PlatformPort
from serve_apps.routes.access import services
from serve_apps.routes.agents import shared_pool_health
from storage.messages import TaskStatus

DEAD_COUNT_CAP: Final = 1_000
CHART_SCAN: Final = 2_000
CHART_BUCKETS: Final = 12
WINDOW: Final = timedelta(hours=1)

router = APIRouter(route_class=ConsoleRoute)
Reader = Annotated[ConsoleCaller, Depends(acting("GET", "/agents", ("GET", "/tasks")))]


@router.get("")
@router.get("/")
async def overview(request: Request, caller: Reader) -> Response:
    figures = await overview_figures(services(request).port, caller)
    template = "_overview.html" if is_htmx(request) else "overview.html"
    return rendering.render(request, template, caller, **figures)


async def overview_figures(port: PlatformPort, caller: ConsoleCaller) -> dict[str, Any]:
    status, stats, routing, dead, chart = await asyncio.gather(
        port.status(), port.agent_stats(3600.0, caller.tenant),
        port.router_state(caller.tenant), _dead_count(port, caller.tenant),
        _throughput(port, caller.tenant))
    pools = (status["pools"] if caller.principal.can("platform:read")
             else [shared_pool_health(pool) for pool in status["pools"]])
    for pool in pools:
        pool.setdefault("ready", sum(1 for r in pool.get("replicas", []) if r.get("ready")))
        pool["healthy"] = pool["ready"] >= min(pool.get("desired", 0), 1) and \
            pool.get("live", 0) >= pool.get("desired", 0)
    queued = status["queued"]
    return {"accepting": status["accepting"],
            "queued": sum(queued.values()) if isinstance(queued, dict) else queued,
            "running": status["running"], "queue_max": status["queue_max"], "pools": pools,
            "stats": stats, "routing": _routing_summary(status, routing),
            "dead": dead, "chart": chart}


def _routing_summary(status: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """What the page says about routing: on or off, and what the router has learned for the
    tenant (per agent type, as `ymera router` prints it)."""
    enabled = bool(status.get("routing", {}).get("enabled") or state.get("enabled"))
    scalars = {k: v for k, v in state.items()
               if isinstance(v, (str, int, float, bool)) and k != "enabled"}
    per_type = {k: v for k, v in state.items() if isinstance(v, dict)}
    return {"enabled": enabled, "scalars": scalars, "per_type": per_type}


async def _dead_count(port: PlatformPort, tenant: str) -> dict[str, Any]:
    page = await port.list_tasks(status=TaskStatus.DEAD.value, tenant=tenant,
                                 limit=DEAD_COUNT_CAP)
    return {"count": len(page.tasks), "capped": page.next_cursor is not None}


async def _throughput(port: PlatformPort, tenant: str) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    start = now - WINDOW
    step = WINDOW / CHART_BUCKETS
    succeeded = [0] * CHART_BUCKETS
    failed = [0] * CHART_BUCKETS
    cursor: str | None = None
    scanned = 0
    capped = older = False
    while not older:
        page = await port.list_tasks(tenant=tenant, limit=500, cursor=cursor)
        for task in page.tasks:
            scanned += 1
            if task.created_at < start:
                older = True
                break
            if task.finished_at is None or task.finished_at < start:
                continue
            index = min(int((task.finished_at - start) / step), CHART_BUCKETS - 1)
            if task.status is TaskStatus.SUCCEEDED:
                succeeded[index] += 1
            elif task.status in (TaskStatus.FAILED, TaskStatus.DEAD):
                failed[index] += 1
        if older or page.next_cursor is None:
            break
        if scanned >= CHART_SCAN:
            capped = True
            break
        cursor = page.next_cursor
    labels = [(start + step * i).strftime("%H:%M") for i in range(CHART_BUCKETS)]
    chart = rendering.bar_chart(list(zip(labels, succeeded, failed)))
    chart["capped"] = capped
    return chart
