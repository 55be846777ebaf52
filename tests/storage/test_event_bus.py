"""The event bus against a real Redis and in process: who receives what, across replicas, and
how a reader that missed events resumes from storage without duplicates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest

from storage.errors import InvalidRequest, StorageError
from storage.event_bus import (
    EventBus,
    EventSubscription,
    LocalEventBus,
    RedisEventBus,
    decode_event,
    encode_event,
    merge_resumed,
)
from storage.messages import TaskEvent
from tests.support.redis_service import REDIS_URL, redis_namespace

BUS_KINDS = ("redis", "local")
NOTHING_MORE_S = 0.2
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"
START = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def event(event_id: int, task_id: str, kind: str = "progress") -> TaskEvent:
    return TaskEvent(id=event_id, task_id=task_id, kind=kind,
                     at=START + timedelta(seconds=event_id), attempt=1,
                     data={"step": event_id, "note": "é"})


@pytest.fixture(params=BUS_KINDS)
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, EventBus, EventBus]]:
    """A namespace and two buses standing for two API replicas: the first publishes, the second
    serves readers. In process there is only one bus, so it plays both."""
    if request.param == "local":
        bus = LocalEventBus()
        yield "local-test", bus, bus
        return
    async with redis_namespace() as namespace:
        publisher, reader = RedisEventBus(REDIS_URL), RedisEventBus(REDIS_URL)
        try:
            yield namespace, publisher, reader
        finally:
            await publisher.close()
            await reader.close()


async def receive(subscription: EventSubscription, count: int) -> list[TaskEvent]:
    received = []
    for _ in range(count):
        got = await subscription.get(timeout=2.0)
        assert got is not None, f"expected {count} events, got only {received}"
        received.append(got)
    return received


def test_events_survive_the_wire_format() -> None:
    original = event(7, "task-a", "attempt_started")
    assert decode_event(encode_event(original)) == original
    assert " " not in encode_event(original)
    no_extras = TaskEvent(id=1, task_id="t", kind="queued", at=START)
    assert decode_event(encode_event(no_extras).encode()) == no_extras


async def test_a_task_subscriber_gets_its_task_in_order_and_nothing_else(
        replicas: tuple[str, EventBus, EventBus]) -> None:
    namespace, publisher, reader = replicas
    async with reader.subscribe(namespace, task_id="task-a") as subscription:
        await publisher.publish(namespace, "acme", [
            event(1, "task-a"), event(2, "task-b"), event(3, "task-a")])
        await publisher.publish(namespace, "acme", [event(4, "task-a"), event(5, "task-b")])
        assert await receive(subscription, 3) == [
            event(1, "task-a"), event(3, "task-a"), event(4, "task-a")]
        assert await subscription.get(timeout=NOTHING_MORE_S) is None


async def test_a_tenant_subscriber_gets_all_of_its_tasks_and_no_other_tenants(
        replicas: tuple[str, EventBus, EventBus]) -> None:
    namespace, publisher, reader = replicas
    async with reader.subscribe(namespace, tenant="acme") as subscription:
        await publisher.publish(namespace, "acme", [event(1, "task-a"), event(2, "task-b")])
        await publisher.publish(namespace, "globex", [event(3, "task-c")])
        await publisher.publish(namespace, "acme", [event(4, "task-a")])
        assert [e.id for e in await receive(subscription, 3)] == [1, 2, 4]
        assert await subscription.get(timeout=NOTHING_MORE_S) is None


async def test_subscriptions_are_separated_by_namespace(
        replicas: tuple[str, EventBus, EventBus]) -> None:
    namespace, publisher, reader = replicas
    async with reader.subscribe(namespace, task_id="task-a") as subscription:
        await publisher.publish(f"{namespace}-other", "acme", [event(1, "task-a")])
        assert await subscription.get(timeout=NOTHING_MORE_S) is None


async def test_every_replica_hears_what_one_replica_publishes() -> None:
    async with redis_namespace() as namespace:
        first, second = RedisEventBus(REDIS_URL), RedisEventBus(REDIS_URL)
        try:
            async with first.subscribe(namespace, task_id="task-a") as on_first, \
                    second.subscribe(namespace, task_id="task-a") as on_second:
                await first.publish(namespace, "acme", [event(1, "task-a")])
                await second.publish(namespace, "acme", [event(2, "task-a")])
                assert await receive(on_first, 2) == [event(1, "task-a"), event(2, "task-a")]
                assert await receive(on_second, 2) == [event(1, "task-a"), event(2, "task-a")]
        finally:
            await first.close()
            await second.close()


async def test_a_reader_resumes_from_storage_without_gaps_or_duplicates(
        replicas: tuple[str, EventBus, EventBus]) -> None:
    namespace, publisher, reader = replicas
    storage = [event(i, "task-a") for i in (1, 2, 3)]
    await publisher.publish(namespace, "acme", storage)  # nobody is listening: lost on the bus
    last_seen = 1  # the reader had handled event 1 before it disconnected

    async with reader.subscribe(namespace, task_id="task-a") as subscription:
        storage.append(event(4, "task-a"))  # committed, and published after the reader listens
        await publisher.publish(namespace, "acme", [event(4, "task-a")])
        stored = [e for e in storage if e.id > last_seen]  # TaskStore.events(task_id, last_seen)
        await publisher.publish(namespace, "acme", [event(5, "task-a")])
        resumed = []
        async for got in merge_resumed(stored, subscription, last_seen):
            resumed.append(got.id)
            if got.id == 5:
                break
    assert resumed == [2, 3, 4, 5]


async def test_merge_resumed_skips_what_the_reader_already_has() -> None:
    async def live() -> AsyncIterator[TaskEvent]:
        for event_id in (3, 4, 2, 6):
            yield event(event_id, "task-a")

    stored = [event(4, "task-a"), event(3, "task-a"), event(1, "task-a")]
    merged = [e.id async for e in merge_resumed(stored, live(), after_id=2)]
    assert merged == [3, 4, 6]


async def test_subscribing_needs_exactly_one_of_task_or_tenant() -> None:
    bus = LocalEventBus()
    with pytest.raises(InvalidRequest):
        bus.subscribe("ns")
    with pytest.raises(InvalidRequest):
        bus.subscribe("ns", task_id="task-a", tenant="acme")
    with pytest.raises(InvalidRequest):
        bus.subscribe("bad:namespace", task_id="task-a")


async def test_a_local_subscriber_that_falls_behind_is_told_to_resume() -> None:
    bus = LocalEventBus(max_pending=2)
    async with bus.subscribe("ns", task_id="task-a") as subscription:
        await bus.publish("ns", "acme", [event(i, "task-a") for i in (1, 2, 3, 4)])
        assert await receive(subscription, 2) == [event(1, "task-a"), event(2, "task-a")]
        with pytest.raises(StorageError, match="resume from storage"):
            await subscription.get(timeout=NOTHING_MORE_S)


async def test_a_lost_redis_subscription_raises_instead_of_skipping_events() -> None:
    async with redis_namespace() as namespace:
        bus = RedisEventBus(REDIS_URL)
        try:
            async with bus.subscribe(namespace, task_id="task-a") as subscription:
                connection = subscription._pubsub.connection  # simulate a dropped connection
                assert connection is not None
                await connection.disconnect()
                with pytest.raises(StorageError, match="resume from storage"):
                    await subscription.get(timeout=NOTHING_MORE_S)
        finally:
            await bus.close()


async def test_an_unreachable_redis_is_a_storage_error() -> None:
    bus = RedisEventBus(UNREACHABLE_REDIS_URL)
    try:
        with pytest.raises(StorageError, match="127.0.0.1:1"):
            await bus.publish("ns", "acme", [event(1, "task-a")])
        with pytest.raises(StorageError, match="could not subscribe"):
            async with bus.subscribe("ns", task_id="task-a"):
                pass
    finally:
        await bus.close()
