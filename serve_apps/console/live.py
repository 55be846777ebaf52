"""Live updates of the task list, the overview and a run's page: the API's event streams
behind the session cookie.

    GET /console/stream                 the API's `GET /api/v1/stream`, for `EventSource`
    GET /console/runs/{run_id}/stream   the API's `GET /api/v1/runs/{run_id}/stream`

Guarantees:
- each stream is exactly the API's (another tenant's run is a 404 before anything is
  streamed); the tenant stream is the API's tenant stream (`routes.streams.tenant_stream`): the
  caller's tenant's task events only, from the newest on or resumed after `Last-Event-ID`,
  with the same per-caller limit (429 before anything is streamed), and it takes the same
  permission (`tasks:read`, `workflows:read` for a run) from the one table
  (`console.access`);
- pages do not render from the stream: `static/console.js` asks HTMX to refresh the page's
  live block after events (coalescing a burst into one request), so what is shown is always
  what the page's own route renders for the caller; the block also polls every
  `rendering.LIVE_POLL_S`, for a browser whose stream is cut or refused.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from serve_apps.console.access import ConsoleCaller, ConsoleRoute, acting
from serve_apps.routes import streams as stream_routes

router = APIRouter(route_class=ConsoleRoute)
Follower = Annotated[ConsoleCaller, Depends(acting("GET", "/stream"))]
RunFollower = Annotated[ConsoleCaller, Depends(acting("GET", "/runs/{run_id}/stream"))]


@router.get("/stream")
async def tenant_stream(request: Request, caller: Follower) -> Response:
    """Every event of the caller's tenant's tasks as Server-Sent Events."""
    return await stream_routes.tenant_stream(
        request, caller.principal, after_id=None,
        last_event_id=request.headers.get("last-event-id"))


@router.get("/runs/{run_id}/stream")
async def run_stream(run_id: str, request: Request, caller: RunFollower) -> Response:
    """The run's events as Server-Sent Events, until the event that finished it."""
    return await stream_routes.run_stream(
        run_id, request, caller.principal, after_id=None,
        last_event_id=request.headers.get("last-event-id"))
