"""Tasks in the console: the filtered list, one task's page, and the actions on it.

Guarantees:
- every page and action runs the API route that does the same thing (`routes.tasks`), with
  the same permission (`console.access`): another tenant's task is the same 404 page as a
  missing one, and an action the role lacks is a 403 page that changes nothing;
- the list pages with the store's keyset cursors (`console.task_filters`); its first page
  refreshes itself every few seconds, later pages stay as they were;
- a task's page shows its payload and result (pretty, collapsible), its attempts on a
  timeline with their CPU and wall time, the routing explanation recorded with it
  (candidates, confidence, the nearest examples), and its events; status, attempts and
  events refresh until the task has finished: at each of its events, which the page follows
  over Server-Sent Events (`task_stream`, the API's own task stream; `static/console.js`),
  and every `FALLBACK_POLL_S` besides, for a browser whose stream is cut;
- controls are shown only for the actions the caller's role allows and the task's state
  permits (cancel while queued or running, requeue when dead, feedback once routed).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Final

import pydantic
from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from serve_apps.console import rendering
from serve_apps.console.access import (
    CONSOLE_PREFIX, ConsoleCaller, ConsoleRoute, acting, form_fields, is_htmx,
)
from serve_apps.console.task_filters import TaskFilters, list_filtered
from serve_apps.routes import streams as stream_routes
from serve_apps.routes import tasks as task_routes
from serve_apps.routes.access import services
from serve_apps.schemas import FeedbackBody, TaskBody
from storage.errors import InvalidRequest
from storage.messages import Attempt, Task, TaskStatus

EVENTS_SHOWN: Final = 200
FALLBACK_POLL_S: Final = 10

router = APIRouter(route_class=ConsoleRoute)
Reader = Annotated[ConsoleCaller, Depends(acting("GET", "/tasks"))]
Submitter = Annotated[ConsoleCaller, Depends(acting("POST", "/tasks"))]
Canceller = Annotated[ConsoleCaller, Depends(acting("POST", "/tasks/{task_id}/cancel"))]
Requeuer = Annotated[ConsoleCaller, Depends(acting("POST", "/tasks/{task_id}/requeue"))]
Follower = Annotated[ConsoleCaller, Depends(acting("GET", "/tasks/{task_id}/stream"))]
FeedbackGiver = Annotated[ConsoleCaller,
                          Depends(acting("POST", "/tasks/{task_id}/feedback"))]


@router.get("/tasks")
async def task_list(request: Request, caller: Reader) -> Response:
    filters = TaskFilters.parse(request.query_params)
    cursor = request.query_params.get("cursor") or None
    listing = await list_filtered(services(request).port, caller.tenant, filters, cursor)
    template = "_task_rows.html" if is_htmx(request) else "tasks.html"
    return rendering.render(request, template, caller, listing=listing, filters=filters,
                            query=filters.query(), cursor=cursor,
                            statuses=[s.value for s in TaskStatus])


@router.post("/tasks")
async def submit_task(request: Request, caller: Submitter) -> Response:
    form = await form_fields(request)
    try:
        payload = json.loads(form.get("payload") or "{}")
    except ValueError as exc:
        raise InvalidRequest(f"payload is not JSON: {exc}", {"field": "payload"}) from None
    try:
        body = TaskBody(description=form.get("description", ""), payload=payload,
                        agent_type=form.get("agent_type") or None)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{field}: {first['msg']}", {"field": field}) from None
    task = await task_routes.submit_task(body, request, Response(), caller.principal,
                                         idempotency_key=None, wait=None)
    return _to_task(request, task["id"])


@router.get("/tasks/{task_id}")
async def task_page(task_id: str, request: Request, caller: Reader) -> Response:
    task = await task_routes.owned_task(request, caller.principal, task_id)
    live = await _live(request, caller, task)
    agent_types = sorted((await services(request).port.status())["agent_types"])
    return rendering.render(request, "task.html", caller, task=task,
                            route=_route_view(task.route), agent_types=agent_types, **live)


@router.get("/tasks/{task_id}/live")
async def task_live(task_id: str, request: Request, caller: Reader) -> Response:
    task = await task_routes.owned_task(request, caller.principal, task_id)
    return rendering.render(request, "_task_live.html", caller, task=task,
                            **await _live(request, caller, task))


@router.get("/tasks/{task_id}/stream")
async def task_stream(task_id: str, request: Request, caller: Follower) -> Response:
    """The task's events as Server-Sent Events: the API's own stream
    (`GET /api/v1/tasks/{task_id}/stream`, with its resumption and per-caller limit), for a
    browser that can send only its cookie."""
    return await stream_routes.task_stream(
        task_id, request, caller.principal, after_id=None,
        last_event_id=request.headers.get("last-event-id"))


@router.post("/tasks/{task_id}/cancel")
async def cancel(task_id: str, request: Request, caller: Canceller) -> Response:
    await task_routes.cancel_task(task_id, request, caller.principal)
    return _to_task(request, task_id)


@router.post("/tasks/{task_id}/requeue")
async def requeue(task_id: str, request: Request, caller: Requeuer) -> Response:
    await task_routes.requeue_task(task_id, request, caller.principal)
    return _to_task(request, task_id)


@router.post("/tasks/{task_id}/feedback")
async def feedback(task_id: str, request: Request, caller: FeedbackGiver) -> Response:
    form = await form_fields(request)
    try:
        body = FeedbackBody(agent_type=form.get("agent_type", ""))
    except pydantic.ValidationError:
        raise InvalidRequest("agent_type must be the name of an agent type",
                             {"field": "agent_type"}) from None
    await task_routes.task_feedback(task_id, body, request, caller.principal)
    return _to_task(request, task_id, notice="feedback")


def _to_task(request: Request, task_id: str, notice: str | None = None) -> Response:
    address = f"{CONSOLE_PREFIX}/tasks/{task_id}" + (f"?notice={notice}" if notice else "")
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": address})
    return RedirectResponse(address, status_code=303)


async def _live(request: Request, caller: ConsoleCaller, task: Task) -> dict[str, Any]:
    port = services(request).port
    attempts, events = await asyncio.gather(port.attempts(task.id, tenant=caller.tenant),
                                            port.events(task.id, 0, tenant=caller.tenant))
    return {"attempts": attempts, "timeline": timeline(attempts),
            "events": events[-EVENTS_SHOWN:], "events_cut": max(0, len(events) - EVENTS_SHOWN),
            "finished": task.status.is_terminal, "fallback_poll_s": FALLBACK_POLL_S}


def timeline(attempts: list[Attempt], width: int = 600) -> dict[str, Any]:
    """The attempts as bars on one time axis (SVG coordinates), for `_task_live.html`."""
    if not attempts:
        return {"width": width, "bars": [], "span_s": 0.0}
    start = min(a.started_at for a in attempts)
    ends = [a.finished_at or a.started_at for a in attempts]
    span = max((end - start).total_seconds() for end in ends) or 1e-3
    bars = []
    for row, attempt in enumerate(attempts):
        begin = (attempt.started_at - start).total_seconds()
        length = ((attempt.finished_at or attempt.started_at) - attempt.started_at
                  ).total_seconds()
        x = begin / span * (width - 4)
        bars.append({"y": row * 22 + 2, "x": round(x + 2, 1),
                     "w": round(max(length / span * (width - 4), 3), 1),
                     "outcome": attempt.outcome.value, "number": attempt.number})
    return {"width": width, "height": len(attempts) * 22 + 4, "bars": bars, "span_s": span}


def _route_view(route: Any) -> dict[str, Any] | None:
    """The routing explanation as `ymera explain` shows it: the decision, its confidence, the
    ranked candidates and the nearest examples."""
    if not isinstance(route, dict) or not route:
        return None
    candidates = [{"agent_type": c[0], "score": c[1]} for c in route.get("candidates", [])
                  if isinstance(c, (list, tuple)) and len(c) == 2]
    nearest = [n for n in route.get("nearest", []) if isinstance(n, dict)]
    return {"agent_type": route.get("agent_type"), "routed": route.get("routed", True),
            "method": route.get("method"), "confidence": route.get("confidence"),
            "similarity": route.get("similarity"), "reason": route.get("reason"),
            "candidates": candidates, "nearest": nearest}
