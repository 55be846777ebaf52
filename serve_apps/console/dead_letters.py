"""Dead letters in the console: the list, and requeueing one task or every task a filter
selects.

Guarantees:
- the list is the tenant's dead tasks (`GET /api/v1/dead`'s permission, `dead:read`),
  filtered by agent type and text like the task list, paged by the store's cursors;
- a bulk requeue is two steps: the preview counts the dead tasks the filter selects now and
  asks to confirm that number; the confirmed post requeues the tasks the filter selects then
  (each through the API's requeue: its permission, its tenant check, its audit entry) and
  says how many were requeued and how many could not be (with the first reasons);
- a bulk requeue takes both `dead:read` and `tasks:requeue`, and the session's CSRF token;
- one bulk requeue touches at most `BULK_CAP` tasks; the preview says when the filter
  selects more.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from serve_apps.console import rendering
from serve_apps.console.access import (
    ConsoleCaller, ConsoleRoute, acting, form_fields, is_htmx,
)
from serve_apps.console.task_filters import TaskFilters, list_filtered
from serve_apps.platform_port import PlatformPort
from serve_apps.routes import tasks as task_routes
from serve_apps.routes.access import services
from storage.errors import YmeraError
from storage.messages import TaskStatus

BULK_CAP: Final = 10_000
REASONS_SHOWN: Final = 5

router = APIRouter(route_class=ConsoleRoute)
Reader = Annotated[ConsoleCaller, Depends(acting("GET", "/dead"))]
BulkRequeuer = Annotated[ConsoleCaller, Depends(acting(
    "GET", "/dead", ("POST", "/tasks/{task_id}/requeue")))]


def dead_filters(params: dict[str, str]) -> TaskFilters:
    """The dead-letter filters of a query or form: agent type and text; status is `dead`."""
    return TaskFilters.parse({"agent_type": params.get("agent_type", ""),
                              "q": params.get("q", ""), "status": TaskStatus.DEAD.value})


@router.get("/dead")
async def dead_list(request: Request, caller: Reader) -> Response:
    filters = dead_filters(dict(request.query_params))
    cursor = request.query_params.get("cursor") or None
    listing = await list_filtered(services(request).port, caller.tenant, filters, cursor)
    return rendering.render(request, "dead.html", caller, listing=listing, filters=filters,
                            query=filters.query(), cursor=cursor)


@router.get("/dead/requeue")
async def bulk_preview(request: Request, caller: BulkRequeuer) -> Response:
    filters = dead_filters(dict(request.query_params))
    task_ids, capped = await matching_dead(services(request).port, caller.tenant, filters)
    template = "_bulk_confirm.html" if is_htmx(request) else "bulk_confirm.html"
    return rendering.render(request, template, caller, filters=filters, count=len(task_ids),
                            capped=capped)


@router.post("/dead/requeue")
async def bulk_requeue(request: Request, caller: BulkRequeuer) -> Response:
    form = await form_fields(request)
    filters = dead_filters(form)
    task_ids, capped = await matching_dead(services(request).port, caller.tenant, filters)
    requeued = 0
    reasons: list[str] = []
    for task_id in task_ids:
        try:
            await task_routes.requeue_task(task_id, request, caller.principal)
            requeued += 1
        except YmeraError as exc:
            if len(reasons) < REASONS_SHOWN:
                reasons.append(f"{task_id}: {exc}")
    template = "_bulk_done.html" if is_htmx(request) else "bulk_done.html"
    return rendering.render(request, template, caller, filters=filters, requeued=requeued,
                            failed=len(task_ids) - requeued, reasons=reasons, capped=capped,
                            confirmed=form.get("expected"))


async def matching_dead(port: PlatformPort, tenant: str,
                        filters: TaskFilters) -> tuple[list[str], bool]:
    """The ids of `tenant`'s dead tasks that `filters` selects, newest first, at most
    `BULK_CAP`; and whether there were more."""
    task_ids: list[str] = []
    cursor: str | None = None
    while True:
        listing = await list_filtered(port, tenant, filters, cursor, limit=1000)
        task_ids.extend(task.id for task in listing.tasks)
        if len(task_ids) >= BULK_CAP:
            return task_ids[:BULK_CAP], len(task_ids) > BULK_CAP or bool(listing.next_cursor)
        if listing.next_cursor is None:
            return task_ids, False
        cursor = listing.next_cursor
