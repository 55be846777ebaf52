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
    request it gets; `bodies` are their JSON bodies."""

    answers: list[web.Response] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    delay_s: float = 0.0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def bodies(self) -> list[Any]:
        return [json.loads(body) for _, body in self.requests]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self.answers.pop(0) if self.answers else web.Response(status=200)


@contextlib.asynccontextmanager
async def serving(endpoint: Receiver | None = None) -> AsyncIterator[Receiver]:
    """`endpoint` (a new `Receiver` by default) served at its `url` for the block."""
    endpoint = endpoint or Receiver()
    app = web.Application()
    app.router.add_post("/hook", endpoint.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    endpoint.port = runner.addresses[0][1]
    try:
        yield endpoint
    finally:
        await runner.cleanup()
