"""Task events fanned out to whoever streams them: any API replica, any number of readers.

The orchestrator commits an event to the `task_events` table first and publishes it after; the
bus is a notification path, never the record. Each event goes to its task's channel and to its
tenant's channel (`storage.redis_keys`), so a reader follows one task or a whole tenant.

Delivery contract, shared by both implementations:

- A subscription is live once `async with bus.subscribe(...)` has entered: every event published
  after that point reaches it, and events of one `publish` call arrive in list order.
- Pub/sub is lossy by nature: nothing published before the subscription opened, or while its
  connection was down, is delivered. A subscription that may have missed events says so by
  raising `StorageError` (connection lost, or a local subscriber fell too far behind); it never
  silently skips ahead.
- Readers therefore resume from storage by event id. Open the subscription first, then read what
  was missed, then follow the bus; `merge_resumed` removes the overlap::

      async with bus.subscribe(namespace, task_id=task_id) as subscription:
          stored = await task_store.events(task_id, after_id)
          async for event in merge_resumed(stored, subscription, after_id):
              ...  # each event once, stored ones first

  On `StorageError`, repeat the recipe with the id of the last event handled.

`RedisEventBus` serves several API replicas; `LocalEventBus` is the in-process equivalent for a
single node without Redis (publisher and readers must share the process and event loop).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from datetime import datetime
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from storage import redis_keys
from storage.errors import InvalidRequest, StorageError
from storage.messages import TaskEvent
from storage.storable import readable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 5.0
LOCAL_MAX_PENDING = 1000


def encode_event(event: TaskEvent) -> str:
    """The compact JSON form of an event on the wire (data too deep to show is a marker,
    see `storage.storable.readable`)."""
    return json.dumps(
        {"id": event.id, "task_id": event.task_id, "kind": event.kind,
         "at": event.at.isoformat(), "attempt": event.attempt, "data": readable(event.data)},
        separators=(",", ":"),
    )


def decode_event(raw: str | bytes) -> TaskEvent:
    """The event `encode_event` wrote. Raises `ValueError` (or `KeyError`) on anything else."""
    fields: dict[str, Any] = json.loads(raw)
    return TaskEvent(id=int(fields["id"]), task_id=fields["task_id"], kind=fields["kind"],
                     at=datetime.fromisoformat(fields["at"]), attempt=fields.get("attempt"),
                     data=fields.get("data"))


class EventSubscription(Protocol):
    """One reader's live view of a channel. Enter it before relying on delivery; iterate it (waits
    forever) or call `get` (returns None after `timeout` seconds without an event)."""

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc_info: object) -> None: ...
    async def get(self, timeout: float | None = None) -> TaskEvent | None: ...
    def __aiter__(self) -> AsyncIterator[TaskEvent]: ...


class EventBus(Protocol):
    """Publishes task events and hands out subscriptions to one task or one tenant."""

    async def publish(self, namespace: str, tenant: str, events: list[TaskEvent]) -> None: ...
    def subscribe(self, namespace: str, *, task_id: str | None = None,
                  tenant: str | None = None) -> EventSubscription: ...
    async def close(self) -> None: ...


def subscription_channel(namespace: str, task_id: str | None, tenant: str | None) -> str:
    """The channel a subscription listens to: exactly one of `task_id` and `tenant` is given."""
    if (task_id is None) == (tenant is None):
        raise InvalidRequest("subscribe to exactly one of task_id or tenant",
                             {"task_id": task_id, "tenant": tenant})
    if task_id is not None:
        return redis_keys.task_channel(namespace, task_id)
    return redis_keys.tenant_channel(namespace, tenant or "")


async def merge_resumed(stored: Iterable[TaskEvent], live: AsyncIterable[TaskEvent],
                        after_id: int = 0) -> AsyncIterator[TaskEvent]:
    """Stored events after `after_id` in id order, then live ones, skipping any live event that
    was already stored or is not after `after_id`. Each event is yielded once, provided the
    publisher publishes it once."""
    replayed: set[int] = set()
    for event in sorted(stored, key=lambda e: e.id):
        if event.id > after_id and event.id not in replayed:
            replayed.add(event.id)
            yield event
    async for event in live:
        if event.id > after_id and event.id not in replayed:
            yield event


class _Subscription:
    async def get(self, timeout: float | None = None) -> TaskEvent | None:
        raise NotImplementedError

    def __aiter__(self) -> AsyncIterator[TaskEvent]:
        return self

    async def __anext__(self) -> TaskEvent:
        event = await self.get(None)
        assert event is not None  # get(None) waits until there is one
        return event


def _address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


class RedisEventBus:
    """Event bus over Redis pub/sub, shared by every replica that uses the same Redis and
    namespace. A batch costs one round trip. Redis failures raise `StorageError`."""

    def __init__(self, url: str) -> None:
        self.address = _address(url)
        options: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT_S,
                                   "socket_timeout": COMMAND_TIMEOUT_S}
        self._publisher = Redis.from_url(url, **options)
        # Subscriptions never reconnect behind the reader's back: a reconnect loses messages.
        self._subscriber = Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)

    async def publish(self, namespace: str, tenant: str, events: list[TaskEvent]) -> None:
        """Publish each event to its task's channel and to `tenant`'s channel, in list order."""
        if not events:
            return
        tenant_channel = redis_keys.tenant_channel(namespace, tenant)
        try:
            async with self._publisher.pipeline(transaction=False) as pipe:
                for event in events:
                    message = encode_event(event)
                    pipe.publish(redis_keys.task_channel(namespace, event.task_id), message)
                    pipe.publish(tenant_channel, message)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StorageError(
                f"could not publish {len(events)} task event(s) to Redis at {self.address}: "
                f"{exc}", {"address": self.address}) from exc

    def subscribe(self, namespace: str, *, task_id: str | None = None,
                  tenant: str | None = None) -> _RedisSubscription:
        """A subscription to one task's events or to all events of one tenant's tasks."""
        channel = subscription_channel(namespace, task_id, tenant)
        return _RedisSubscription(self._subscriber.pubsub(), channel, self.address)

    async def close(self) -> None:
        """Close both connection pools; open subscriptions fail with `StorageError`."""
        await self._publisher.aclose()
        await self._subscriber.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _RedisSubscription(_Subscription):
    def __init__(self, pubsub: PubSub, channel: str, address: str) -> None:
        self._pubsub = pubsub
        self._channel = channel
        self._address = address

    def _lost(self, exc: BaseException | None) -> StorageError:
        return StorageError(
            f"event subscription to {self._channel} at Redis {self._address} was interrupted "
            f"and may have missed events; resume from storage by event id ({exc})",
            {"channel": self._channel, "address": self._address})

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + COMMAND_TIMEOUT_S
        try:
            await self._pubsub.subscribe(self._channel)
            while loop.time() < deadline:
                message = await self._pubsub.get_message(timeout=deadline - loop.time())
                if message is not None and message["type"] == "subscribe":
                    return self
        except (RedisError, OSError) as exc:
            await self._pubsub.aclose()
            raise StorageError(f"could not subscribe to {self._channel} at Redis "
                               f"{self._address}: {exc}", {"address": self._address}) from exc
        await self._pubsub.aclose()
        raise StorageError(f"Redis at {self._address} did not confirm the subscription to "
                           f"{self._channel} within {COMMAND_TIMEOUT_S}s")

    async def __aexit__(self, *exc_info: object) -> None:
        await self._pubsub.aclose()

    async def get(self, timeout: float | None = None) -> TaskEvent | None:
        """The next event, or None after `timeout` seconds (None: wait as long as it takes)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            connection = self._pubsub.connection
            if connection is None or not connection.is_connected:
                raise self._lost(None)
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                         timeout=remaining)
            except (RedisError, OSError) as exc:
                raise self._lost(exc) from exc
            if message is not None and message["type"] == "message":
                try:
                    return decode_event(message["data"])
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("ignoring a malformed message on %s: %s", self._channel, exc)
            if deadline is not None and loop.time() >= deadline:
                return None


class LocalEventBus:
    """The in-process event bus: same contract as `RedisEventBus` for publishers and readers
    in one process. Each subscriber buffers at most `max_pending` events; one that falls further
    behind is dropped and its reader gets `StorageError` once the buffered events are read."""

    def __init__(self, max_pending: int = LOCAL_MAX_PENDING) -> None:
        self.max_pending = max_pending
        self._subscribers: dict[str, set[_LocalSubscription]] = {}

    async def publish(self, namespace: str, tenant: str, events: list[TaskEvent]) -> None:
        """Hand each event to the subscribers of its task and of `tenant`, in list order."""
        tenant_channel = redis_keys.tenant_channel(namespace, tenant)
        for event in events:
            task_channel = redis_keys.task_channel(namespace, event.task_id)
            for channel in (task_channel, tenant_channel):
                for subscription in list(self._subscribers.get(channel, ())):
                    subscription.deliver(event)

    def subscribe(self, namespace: str, *, task_id: str | None = None,
                  tenant: str | None = None) -> _LocalSubscription:
        """A subscription to one task's events or to all events of one tenant's tasks."""
        channel = subscription_channel(namespace, task_id, tenant)
        return _LocalSubscription(self, channel)

    async def close(self) -> None:
        """Nothing to release; present so both buses are closed the same way."""

    def _attach(self, subscription: _LocalSubscription) -> None:
        self._subscribers.setdefault(subscription.channel, set()).add(subscription)

    def _detach(self, subscription: _LocalSubscription) -> None:
        listeners = self._subscribers.get(subscription.channel, set())
        listeners.discard(subscription)
        if not listeners:
            self._subscribers.pop(subscription.channel, None)


class _LocalSubscription(_Subscription):
    def __init__(self, bus: LocalEventBus, channel: str) -> None:
        self._bus = bus
        self.channel = channel
        self._queue: asyncio.Queue[TaskEvent] = asyncio.Queue(maxsize=bus.max_pending)
        self._overflowed = False

    def deliver(self, event: TaskEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._overflowed = True
            self._bus._detach(self)

    async def __aenter__(self) -> Self:
        self._bus._attach(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._bus._detach(self)

    async def get(self, timeout: float | None = None) -> TaskEvent | None:
        """The next event, or None after `timeout` seconds (None: wait as long as it takes)."""
        if self._queue.empty() and self._overflowed:
            raise StorageError(
                f"event subscriber to {self.channel} fell more than {self._bus.max_pending} "
                "events behind and was dropped; resume from storage by event id",
                {"channel": self.channel})
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
