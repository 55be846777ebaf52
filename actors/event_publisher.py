"""Committed task events, published for readers that follow tasks live (the HTTP API's streams).

The store writer hands over each committed flush's events, with their storage ids; they are
published on the event bus (Redis pub/sub, shared by every API replica) to their task's and
their tenant's channels, in commit order, from one background loop.

Publishing is best effort and never slows the lifecycle: the events table is the record, and
the bus only says "look now". A reader that missed events (the bus was down, the backlog
overflowed, it subscribed late) reads them from storage by event id. An event whose task's
tenant is not known here is not published (it could otherwise reach the wrong tenant).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from storage.messages import TaskEvent

log = logging.getLogger("ymera.events")

MAX_BACKLOG = 1000  # flushes waiting to be published; beyond it the oldest are dropped


class EventPublisher:
    """Publishes committed events on `bus` under `namespace`; `tenant_of(task_id)` says whose
    task it is (None when unknown)."""

    def __init__(self, bus: Any, namespace: str,
                 tenant_of: Callable[[str], str | None]) -> None:
        self.bus = bus
        self.namespace = namespace
        self.tenant_of = tenant_of
        self.published = 0
        self.dropped = 0
        self._backlog: collections.deque[list[TaskEvent]] = collections.deque()
        self._wakeup = asyncio.Event()

    def committed(self, events: list[TaskEvent]) -> None:
        """Queue a committed flush's events for publishing (never blocks)."""
        if len(self._backlog) >= MAX_BACKLOG:
            self.dropped += len(self._backlog.popleft())
        self._backlog.append(events)
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._backlog:
                await self._publish(self._backlog.popleft())

    async def _publish(self, events: list[TaskEvent]) -> None:
        by_tenant: dict[str, list[TaskEvent]] = {}
        for event in events:
            tenant = self.tenant_of(event.task_id)
            if tenant is None:
                self.dropped += 1
                continue
            by_tenant.setdefault(tenant, []).append(event)
        for tenant, own in by_tenant.items():
            try:
                await self.bus.publish(self.namespace, tenant, own)
                self.published += len(own)
            except Exception as exc:
                self.dropped += len(own)
                log.warning("publishing %d task events failed: %s", len(own), exc)

    async def close(self) -> None:
        await self.bus.close()
