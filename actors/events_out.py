"""The orchestrator's side of events going out: it starts the webhook delivery actor, wakes it
when a commit carries events someone is waiting for, and runs the message pump.

    events = EventsOut(config, backend, spawn)
    lifecycle = Lifecycle(store, config, on_commit, metrics, on_flushed=events.flushed)
    events.start(store, submit=..., get_tasks=..., agent_types=...)

Guarantees: nothing here is needed for correctness. Deliveries are written by the same
transactions as their events (`storage.webhook_outbox`) and the delivery actor polls the
outbox on its own; a wake only makes a delivery leave sooner. Wakes are coalesced (at most one
call to the actor in flight) and sent only for tenants that have an enabled subscription (the
set is re-read every `ACTIVE_REFRESH_S`) or have submitted a task with a `callback_url` since
this orchestrator started, so a tenant that uses no webhooks costs one set lookup per event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from actors.periodic import every
from storage.messages import Task, TaskRequest

if TYPE_CHECKING:
    from actors.agent import Agent
    from actors.backend import Backend
    from actors.config import OrchestratorConfig
    from storage.task_store import TaskStore, WriteBatch

log = logging.getLogger("ymera.events_out")

ACTIVE_REFRESH_S = 2.0
PUMP_INTERVAL_S = 0.5


class EventsOut:
    """Webhook delivery and message pump wiring of one orchestrator."""

    def __init__(self, config: OrchestratorConfig, backend: Backend,
                 spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task],
                 agent_types: Mapping[str, type[Agent]]) -> None:
        from actors.message_pump import listening_types

        listening_types(agent_types)  # a bad `on_message` declaration stops the start now
        self.config = config
        self.backend = backend
        self.spawn = spawn
        self.handle: Any = None
        self.tenants: set[str] = set()  # tenants some delivery may be waiting for
        self._callback_tenants: set[str] = set()
        self._waking = False
        self._again = False

    def start(self, store: TaskStore, submit: Callable[[list[TaskRequest]], Awaitable[list[str]]],
              get_tasks: Callable[[list[str]], Awaitable[dict[str, Task]]],
              agent_types: Mapping[str, type[Agent]]) -> None:
        """Start the delivery actor, the refresh of the tenants with subscriptions and the
        message pump (when an agent type starts work from messages)."""
        from actors.message_pump import MessagePump, listening_types
        from storage.inbox import InboxStore
        from storage.webhook_store import WebhookStore

        store.webhook_retry_period_s = self.config.webhooks.retry_period_s
        self.handle = self.backend.start_webhook_delivery(
            self.config.webhooks, self.config.database_url, self.config.log_format,
            self.config.log_level)
        hooks = WebhookStore(store.engine)

        async def refresh() -> None:
            self.tenants = await hooks.active_tenants() | self._callback_tenants

        self.spawn(every(ACTIVE_REFRESH_S, refresh, "reading which tenants have webhooks"),
                   "webhook-tenants")
        if listening_types(agent_types):
            pump = MessagePump(InboxStore(store.engine), agent_types, submit, get_tasks)
            self.spawn(every(PUMP_INTERVAL_S, pump.run_once, "starting tasks from messages"),
                       "message-pump")

    def submitted(self, requests: Sequence[TaskRequest]) -> None:
        """Note the tenants of tasks with a callback, so their outcomes wake the actor."""
        for request in requests:
            if request.callback_url is not None and request.tenant not in self.tenants:
                self._callback_tenants.add(request.tenant)
                self.tenants.add(request.tenant)

    def flushed(self, batch: WriteBatch) -> None:
        """After a commit: wake the delivery actor if an event in it may have a receiver."""
        if self.handle is None or not batch.notifications:
            return
        if any(note.tenant in self.tenants for note in batch.notifications):
            self.wake()

    def wake(self) -> None:
        if self._waking:
            self._again = True
            return
        self._waking = True
        self.spawn(self._wake(), "webhook-wake")

    async def _wake(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    await self.handle.wake.remote()
                except Exception as exc:  # restarting: it polls on its own when back
                    log.debug("waking the webhook delivery actor failed (%s)", exc)
                if not self._again:
                    return
        finally:
            self._waking = False


async def check_callback_urls(requests: Sequence[TaskRequest], config: OrchestratorConfig,
                              many: bool) -> None:
    """`check_callback_url` for each request that names a callback (the error names the
    request's index when there are several)."""
    for index, request in enumerate(requests):
        if request.callback_url is not None:
            await check_callback_url(request.callback_url, config, index if many else None)


async def check_callback_url(url: str, config: OrchestratorConfig,
                             index: int | None = None) -> None:
    """Refuse a `callback_url` that could never be called: the SSRF guard of every delivery
    (`actors.webhook_sender.check_destination`), applied once at submission too, so a caller
    hears of a private or unresolvable address now, not from a failed delivery later
    (`InvalidRequest`, field "callback_url"). A DNS failure that may pass is let through: each
    delivery checks again."""
    from actors.errors import InvalidTaskInput, RetryableAgentError
    from actors.webhook_sender import DestinationPolicy, check_destination
    from storage.errors import InvalidRequest
    from storage.webhook_records import check_webhook_url

    check_webhook_url(url, "callback_url")
    settings = config.webhooks
    policy = DestinationPolicy.from_settings(settings.allow_private_networks,
                                             settings.allowed_networks)
    try:
        await check_destination(url, policy)
    except RetryableAgentError:
        return
    except InvalidTaskInput as exc:
        where = f"task {index}: " if index is not None else ""
        details: dict[str, Any] = {**exc.details, "field": "callback_url"}
        if index is not None:
            details["index"] = index
        raise InvalidRequest(f"{where}callback_url refused: {exc}", details) from exc
