"""Task and workflow run events as Server-Sent Events: one task's, every task's of the
caller's tenant, or one workflow run's.

    GET /api/v1/tasks/{task_id}/stream      one task, ends after its terminal event
    GET /api/v1/stream                      the tenant's tasks, until the client leaves
    GET /api/v1/runs/{run_id}/stream        one run, ends after the event that finished it

Each message is `id: <event id>`, `event: <kind>`, `data: <the event as JSON>`; a comment
(`: keep-alive`) is sent when nothing else was for `HEARTBEAT_S`, and the tenant stream
sends `: subscribed` once it has sent the stored events it resumed with and follows live ones.

Guarantees:
- another tenant's task answers 404 before anything is streamed;
- `Last-Event-ID` (or `?after_id=`) resumes a task stream: the stored events after it first,
  then live ones, each once and in id order. Live events come from the Redis event bus when
  `redis_url` is set (subscribe, then read storage, then follow: `storage.event_bus`); a bus
  gap repeats that from the last id sent. Without Redis the task's events are polled from
  storage every `POLL_S`;
- the tenant stream starts at the newest event, or resumes after `Last-Event-ID` (or
  `?after_id=`) with the stored events of the tenant's tasks first; then, as the task stream,
  it follows the bus (reading storage again after a bus gap) or, without Redis, polls
  storage: each event once, in id order, nothing missed;
- the bus subscription is closed when the stream ends or the client disconnects;
- a run stream answers 404 for another tenant's run before anything is streamed, resumes
  after `Last-Event-ID` (or `?after_id=`) like a task stream, polls the run's stored events
  every `POLL_S` (each once, in id order), and ends once it has sent the `run_succeeded`,
  `run_failed` or `run_cancelled` event of a finished run (at once when the resume point is
  past it); a run retried after that event goes on streaming through the retry;
- a caller (a user or an API key) holds at most `max_streams_per_caller` streams at once on one
  API replica; one more answers 429 with `Retry-After` before anything is streamed, and a
  stream's place is given back when it ends or its client leaves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from serve_apps.errors import RateLimited
from serve_apps.permissions import Principal
from serve_apps.routes.access import Caller, Services, authorize, services
from serve_apps.routes.tasks import owned_task
from storage.errors import InvalidRequest, StorageError
from storage.event_bus import RedisEventBus, encode_event
from storage.messages import TERMINAL_STATUSES, TaskEvent
from storage.task_store import MAX_PAGE
from storage.workflow_records import FINISHED_RUN_STATUSES, RunEvent

log = logging.getLogger("ymera.streams")

HEARTBEAT_S: Final = 15.0
POLL_S: Final = 0.5
RESUBSCRIBE_DELAY_S: Final = 1.0
TERMINAL_KINDS: Final = frozenset(status.value for status in TERMINAL_STATUSES)
RUN_ENDING_KINDS: Final = frozenset(f"run_{status.value}" for status in FINISHED_RUN_STATUSES)
STREAM_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STREAM_RETRY_AFTER_S: Final = 5.0

router = APIRouter(tags=["streams"], dependencies=[Depends(authorize)])

AfterId = Annotated[int | None, Query(ge=0)]
LastEventId = Annotated[str | None, Header(max_length=32)]


def sse_message(event: TaskEvent | RunEvent) -> str:
    """One event in the SSE wire format."""
    if isinstance(event, RunEvent):
        data = json.dumps(event.to_json(), separators=(",", ":"))
    else:
        data = encode_event(event)
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"


KEEP_ALIVE: Final = ": keep-alive\n\n"
SUBSCRIBED: Final = ": subscribed\n\n"  # the tenant stream is live from here on


def resume_id(last_event_id: str | None, after_id: int | None) -> int:
    """Where the stream starts: `Last-Event-ID` wins over `?after_id=`; 0 means the start."""
    if last_event_id is None or not last_event_id.strip():
        return after_id or 0
    value = last_event_id.strip()
    if not value.isdigit():
        raise InvalidRequest("Last-Event-ID must be an event id (a whole number)",
                             {"field": "Last-Event-ID"})
    return int(value)


@router.get("/tasks/{task_id}/stream", summary="The task's events as Server-Sent Events")
async def task_stream(task_id: str, request: Request, caller: Caller,
                      after_id: AfterId = None,
                      last_event_id: LastEventId = None) -> StreamingResponse:
    start = resume_id(last_event_id, after_id)
    await owned_task(request, caller, task_id)
    svc = services(request)
    return _sse_response(request, caller, _events(svc, _task_feed(svc, task_id), start))


@router.get("/stream", summary="Every event of the tenant's tasks as Server-Sent Events")
async def tenant_stream(request: Request, caller: Caller, after_id: AfterId = None,
                        last_event_id: LastEventId = None) -> StreamingResponse:
    start = resume_id(last_event_id, after_id)
    svc = services(request)
    if not start:  # no resume point: from the newest event on, not the tenant's whole history
        start = await svc.port.last_event_id()
    return _sse_response(request, caller, _events(svc, _tenant_feed(svc, caller.tenant), start))


@router.get("/runs/{run_id}/stream",
            summary="The workflow run's events as Server-Sent Events")
async def run_stream(run_id: str, request: Request, caller: Caller, after_id: AfterId = None,
                     last_event_id: LastEventId = None) -> StreamingResponse:
    start = resume_id(last_event_id, after_id)
    svc = services(request)
    await svc.port.get_run(run_id, tenant=caller.tenant)  # NotFound for another tenant's run
    return _sse_response(request, caller, _run_events_polled(svc, caller.tenant, run_id, start))


class StreamSlots:
    """How many streams each caller, keyed by (tenant, subject), holds open on this replica."""

    def __init__(self, per_caller: int) -> None:
        self.per_caller = per_caller
        self._open: dict[tuple[str, str], int] = {}

    def take(self, caller: Principal) -> Callable[[], None]:
        """A place for one more stream of `caller`, and the function that gives it back;
        `RateLimited` when the caller holds `per_caller` already."""
        key = (caller.tenant, caller.subject)
        held = self._open.get(key, 0)
        if held >= self.per_caller:
            raise RateLimited(f"at most {self.per_caller} open event streams per caller; close "
                              "one first", {"scope": "streams", "limit": self.per_caller},
                              retry_after_s=STREAM_RETRY_AFTER_S)
        self._open[key] = held + 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if given_back:
                return
            given_back = True
            left = self._open.get(key, 1) - 1
            if left > 0:
                self._open[key] = left
            else:
                self._open.pop(key, None)
        return give_back

    def held(self, caller: Principal) -> int:
        return self._open.get((caller.tenant, caller.subject), 0)


class _SlotStreamingResponse(StreamingResponse):
    """Gives its stream's place back when the response ends, however it ends."""

    def __init__(self, body: AsyncIterator[str], give_back: Callable[[], None]) -> None:
        super().__init__(body, media_type="text/event-stream", headers=STREAM_HEADERS)
        self._give_back = give_back

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._give_back()


def _sse_response(request: Request, caller: Principal,
                  body: AsyncIterator[str]) -> StreamingResponse:
    slots: StreamSlots = request.app.state.stream_slots
    return _SlotStreamingResponse(body, slots.take(caller))


@dataclasses.dataclass(frozen=True)
class _Feed:
    """What a stream follows: its stored events after an id, its bus subscription, whether it
    is over (checked before each read of storage), the event kinds that end it, and whether it
    announces `SUBSCRIBED` once it follows live events."""

    name: str
    stored: Callable[[int], AsyncIterator[TaskEvent]]
    subscription: dict[str, str]
    finished: Callable[[], Awaitable[bool]]
    ending_kinds: frozenset[str] = frozenset()
    announces: bool = False


def _task_feed(svc: Services, task_id: str) -> _Feed:
    async def stored(after_id: int) -> AsyncIterator[TaskEvent]:
        for event in await svc.port.events(task_id, after_id):
            yield event

    async def finished() -> bool:
        return (await svc.port.get(task_id)).status.is_terminal

    return _Feed(f"task {task_id}", stored, {"task_id": task_id}, finished, TERMINAL_KINDS)


def _tenant_feed(svc: Services, tenant: str) -> _Feed:
    async def never() -> bool:
        return False

    return _Feed(f"tenant {tenant}", lambda after_id: _stored_tenant_events(svc, tenant, after_id),
                 {"tenant": tenant}, never, announces=True)


def _events(svc: Services, feed: _Feed, after_id: int) -> AsyncIterator[str]:
    if svc.config.redis_url:
        return _events_from_bus(svc, feed, after_id)
    return _events_polled(feed, after_id)


async def _events_from_bus(svc: Services, feed: _Feed, after_id: int) -> AsyncIterator[str]:
    """Subscribe, send what storage holds after the last id sent, follow the bus; again after
    a gap. Ends after an ending event, or at once when the feed was over before a read."""
    bus = RedisEventBus(svc.config.redis_url or "")
    last_id = after_id
    try:
        while True:
            try:
                async with bus.subscribe(svc.config.namespace, **feed.subscription) as live:
                    over = await feed.finished()
                    async for event in feed.stored(last_id):
                        last_id = event.id
                        yield sse_message(event)
                        if event.kind in feed.ending_kinds:
                            return
                    if over:
                        return  # its ending event was at or before the resume id
                    if feed.announces:
                        yield SUBSCRIBED
                    while True:
                        pushed = await live.get(timeout=HEARTBEAT_S)
                        if pushed is None:
                            yield KEEP_ALIVE
                        elif pushed.id > last_id:
                            last_id = pushed.id
                            yield sse_message(pushed)
                            if pushed.kind in feed.ending_kinds:
                                return
            except StorageError as exc:
                log.warning("%s stream: resuming after event %d: %s", feed.name, last_id, exc)
                yield KEEP_ALIVE  # also lets a departed client end the stream here
                await asyncio.sleep(RESUBSCRIBE_DELAY_S)
    finally:
        await bus.close()


async def _events_polled(feed: _Feed, after_id: int) -> AsyncIterator[str]:
    """The feed's events read from storage every `POLL_S`, for a node without Redis."""
    loop = asyncio.get_running_loop()
    last_id = after_id
    quiet_since = loop.time()
    if feed.announces:
        yield SUBSCRIBED
    while True:
        over = await feed.finished()
        async for event in feed.stored(last_id):
            last_id = event.id
            quiet_since = loop.time()
            yield sse_message(event)
            if event.kind in feed.ending_kinds:
                return
        if over:
            return  # its ending event was at or before the resume id
        if loop.time() - quiet_since >= HEARTBEAT_S:
            quiet_since = loop.time()
            yield KEEP_ALIVE
        await asyncio.sleep(POLL_S)


async def _stored_tenant_events(svc: Services, tenant: str,
                                after_id: int) -> AsyncIterator[TaskEvent]:
    """Every stored event of the tenant's tasks after `after_id`, page by page."""
    while True:
        page = await svc.port.tenant_events(tenant, after_id)
        for event in page:
            yield event
        if len(page) < MAX_PAGE:
            return
        after_id = page[-1].id


async def _run_events_polled(svc: Services, tenant: str, run_id: str,
                             after_id: int) -> AsyncIterator[str]:
    """The run's stored events after `after_id`, read every `POLL_S`, until the event that
    finished the run is sent (confirmed by the run's status, so a retried run goes on)."""
    loop = asyncio.get_running_loop()
    last_id, last_kind, first_read = after_id, None, True
    quiet_since = loop.time()
    while True:
        events = await svc.port.run_events(run_id, last_id, tenant=tenant)
        for event in events:
            last_id, last_kind = event.id, event.kind
            yield sse_message(event)
        if events:
            quiet_since = loop.time()
        if last_kind in RUN_ENDING_KINDS or (first_read and not events):
            if (await svc.port.get_run(run_id, tenant=tenant)).run.status.is_finished:
                return
        first_read = False
        if loop.time() - quiet_since >= HEARTBEAT_S:
            quiet_since = loop.time()
            yield KEEP_ALIVE
        if not events:  # else read on at once: a long log comes a page at a time
            await asyncio.sleep(POLL_S)
