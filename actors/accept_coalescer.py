"""Submissions made at the same time in one process, sent to the orchestrator in one call.

    coalescer = AcceptCoalescer(send)        # send(requests) -> [Task | YmeraError, ...]
    task = await coalescer.accept(request)   # this request's task, or its error raised

An API replica answers many submissions at once, and each used to be its own Ray actor call:
submitting the call was the largest part of the replica's CPU per request. Here at most
`max_in_flight` calls are out at a time; requests that arrive while they are all out wait and
leave together in the next call (at most `max_batch` in one). A request that finds a free slot
leaves at once, so one caller alone waits for nothing.

Guarantees: each request gets its own outcome: a bad request fails only itself, with its own
error. A call that fails as a whole (the orchestrator unavailable, say) fails every request in
it with that error, which is what each would have got alone. A caller that stops waiting
(cancelled) does not take its request back: like a call already sent, it may still be accepted
(the idempotency key makes a retry safe). Order between concurrent callers is not promised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from storage.messages import Task, TaskRequest

MAX_IN_FLIGHT = 2
MAX_BATCH = 64

Send = Callable[[list[TaskRequest | dict]], Awaitable[Sequence[Task | BaseException]]]


class AcceptCoalescer:
    def __init__(self, send: Send, max_in_flight: int = MAX_IN_FLIGHT,
                 max_batch: int = MAX_BATCH) -> None:
        if max_in_flight < 1 or max_batch < 1:
            raise ValueError("max_in_flight and max_batch must be at least 1")
        self._send = send
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self._waiting: list[tuple[TaskRequest | dict, asyncio.Future[Task]]] = []
        self._calls: set[asyncio.Task[None]] = set()
        self.calls_sent = 0
        self.requests_sent = 0

    async def accept(self, request: TaskRequest | dict) -> Task:
        future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        self._pump()
        return await future

    def _pump(self) -> None:
        while self._waiting and len(self._calls) < self.max_in_flight:
            batch = self._waiting[:self.max_batch]
            del self._waiting[:self.max_batch]
            call = asyncio.ensure_future(self._call(batch))
            self._calls.add(call)
            call.add_done_callback(self._call_ended)

    def _call_ended(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        self._pump()

    async def _call(self, batch: list[tuple[TaskRequest | dict, asyncio.Future[Task]]]) -> None:
        self.calls_sent += 1
        self.requests_sent += len(batch)
        try:
            outcomes = await self._send([request for request, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(batch)} submissions")
        except BaseException as exc:  # the whole call failed: so did each request in it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, future), outcome in zip(batch, outcomes):
            if future.done():  # its caller stopped waiting
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def stats(self) -> dict[str, Any]:
        return {"calls": self.calls_sent, "requests": self.requests_sent,
                "waiting": len(self._waiting), "in_flight": len(self._calls)}
