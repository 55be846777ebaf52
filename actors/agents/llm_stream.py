"""Streamed answers of the `llm` agent: the gateway's deltas, coalesced into task output events.

`stream_answer` reads a gateway stream (`LanguageModels.stream`) and emits what it writes as
"output_delta" events `{"text", "index"}` through an `emit` function. Guarantees:

- deltas are coalesced: an event goes out once `FLUSH_CHARS` characters have gathered, or
  `FLUSH_S` after the first character waiting, whichever comes first (a slow model's text is
  never held back longer than that), and once more at the end; an event carries at most
  `MAX_EVENT_CHARS` characters (a huge delta becomes several events);
- `index` counts the task attempt's delta events from 0, so a reader orders and de-duplicates
  them; the texts of an attempt's events, joined in index order, are exactly the answer's text;
- a stream that ends with `{"done": answer}` returns the answer; one that ends with
  `{"error": ...}` first emits what was pending, then raises `StreamFailed` with its code and
  message (the caller emits "output_error"); one that stops without either is `StreamFailed`
  too: a stream never ends silently truncated;
- a failure to emit (the orchestrator is restarting) is logged and the stream goes on: the
  task's result holds the whole text whatever the live readers saw.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

FLUSH_CHARS = 200
FLUSH_S = 0.05
MAX_EVENT_CHARS = 4000

Emit = Callable[[str, int], Awaitable[None]]
"""Emit one delta event: its text and index."""

log = logging.getLogger("ymera.agents.llm")

_END = object()


class StreamFailed(Exception):
    """The model's stream ended with an error after it had started (or without its end)."""

    def __init__(self, code: str, message: str, deployment: str | None = None) -> None:
        super().__init__(code, message, deployment)
        self.code = code
        self.message = message
        self.deployment = deployment


class _Coalescer:
    """Text waiting to go out, and the index of the next event."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.pending: list[str] = []
        self.size = 0
        self.since: float | None = None
        self.index = 0
        self.emit_failed = False

    def add(self, text: str) -> None:
        if text:
            if self.since is None:
                self.since = time.monotonic()
            self.pending.append(text)
            self.size += len(text)

    def due_in(self) -> float | None:
        """Seconds until the pending text is due; None when nothing waits."""
        if self.since is None:
            return None
        if self.size >= FLUSH_CHARS:
            return 0.0
        return max(0.0, FLUSH_S - (time.monotonic() - self.since))

    async def flush(self) -> None:
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending, self.size, self.since = [], 0, None
        for start in range(0, len(text), MAX_EVENT_CHARS):
            index = self.index
            self.index += 1
            try:
                await self.emit(text[start:start + MAX_EVENT_CHARS], index)
            except Exception as exc:  # live output is best effort; the result has the text
                if not self.emit_failed:
                    log.warning("streamed output could not be recorded (%s: %s); the task's "
                                "result will hold the whole answer", type(exc).__name__, exc)
                self.emit_failed = True


async def stream_answer(items: AsyncIterator[dict[str, Any]], emit: Emit) -> dict[str, Any]:
    """The answer of the stream `items`, its text emitted on the way (see the module)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def read() -> None:
        try:
            async for item in items:
                await queue.put(item)
        except BaseException as exc:
            await queue.put(exc)
            raise
        await queue.put(_END)

    reader = asyncio.get_running_loop().create_task(read(), name="llm-stream-reader")
    out = _Coalescer(emit)
    try:
        while True:
            due = out.due_in()
            try:
                item = await asyncio.wait_for(queue.get(), due) if due is not None \
                    else await queue.get()
            except asyncio.TimeoutError:
                await out.flush()
                continue
            if isinstance(item, BaseException):
                await out.flush()
                raise item
            if item is _END:
                await out.flush()
                raise StreamFailed("stream_ended", "the model's stream ended without its answer")
            if "delta" in item:
                out.add(str(item["delta"]))
                if out.size >= FLUSH_CHARS:
                    await out.flush()
            elif "done" in item:
                await out.flush()
                answer: dict[str, Any] = item["done"]
                return answer
            elif "error" in item:
                await out.flush()
                error = item["error"] or {}
                raise StreamFailed(str(error.get("code") or "stream_broken"),
                                   str(error.get("message") or "the model's stream broke"),
                                   error.get("deployment"))
    finally:
        if not reader.done():
            reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
