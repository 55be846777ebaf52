"""A local webhook endpoint for tests: on 127.0.0.1, on a free port, keeping what it gets."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Receiver:
    """A webhook endpoint that answers with `answers` in turn (then 200) and keeps every
    request it gets; `bodies` are their JSON bodies. Each request waits `delays` in turn (then
    `delay_s`) before its answer. A `port` set before serving is the one it listens on."""

    answers: list[web.Response] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    delay_s: float = 0.0
    delays: list[float] = field(default_factory=list)
    port: int = 0
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def bodies(self) -> list[Any]:
        return [json.loads(body) for _, body in self.requests]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        delay = self.delays.pop(0) if self.delays else self.delay_s
        if delay:  # cut short when the endpoint closes, so closing never waits for it
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closing.wait(), delay)
        return self.answers.pop(0) if self.answers else web.Response(status=200)


@contextlib.asynccontextmanager
async def serving(endpoint: Receiver | None = None) -> AsyncIterator[Receiver]:
    """`endpoint` (a new `Receiver` by default) served at its `url` for the block."""
    endpoint = endpoint or Receiver()
    app = web.Application()
    app.router.add_post("/hook", endpoint.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", endpoint.port)
    await site.start()
    endpoint.port = runner.addresses[0][1]
    endpoint.closing.clear()
    try:
        yield endpoint
    finally:
        endpoint.closing.set()
        await runner.cleanup()
