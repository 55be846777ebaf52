"""The delivery loop, run in this process over a real SQLite outbox (`WebhookStore`) against real
receivers on 127.0.0.1: retries with their recorded attempts, per-task ordering, a receiver that
is down for a while, answers that fail at once, the end of the retry period, secret rotation
and the SSRF guard at delivery time."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from actors.agents.webhook_addresses import parse_networks
from actors.config import WebhookSettings
from actors.webhook_delivery import DeliveryLoop, backoff_s, next_step
from actors.webhook_metrics import WebhookMetrics
from actors.webhook_sender import FAILED, RETRY, DestinationPolicy, Sent, WebhookSender
from storage.database import migrate_async
from storage.errors import StorageError
from storage.messages import utcnow
from storage.webhook_outbox import Notification, enqueue
from storage.webhook_records import Delivery
from storage.webhook_store import WebhookStore
from tests.support.databases import fresh_sqlite_url
from tests.support.webhooks import Receiver, serving

FAST = WebhookSettings(retry_base_s=0.05, retry_max_s=0.2, timeout_s=2.0, poll_interval_s=0.05,
                       allowed_networks=("127.0.0.1/32",))
LOOPBACK_ALLOWED = DestinationPolicy(allowed_networks=parse_networks("127.0.0.1/32"))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[WebhookStore]:
    url = fresh_sqlite_url(tmp_path)
    await migrate_async(url)
    async with await WebhookStore.open(url) as opened:
        yield opened


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving() as endpoint:
        yield endpoint


class Running:
    """A delivery loop running in the background of a test, with its metrics."""

    def __init__(self, store: WebhookStore, settings: WebhookSettings = FAST,
                 policy: DestinationPolicy = LOOPBACK_ALLOWED) -> None:
        self.sender = WebhookSender(policy, settings.timeout_s)
        self.metrics = WebhookMetrics()
        self.loop = DeliveryLoop(store, self.sender, settings, self.metrics)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.loop.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.loop.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)
        await self.sender.close()


async def notify(store: WebhookStore, *kinds: str, task_id: str = "t" * 32,
                 tenant: str = "acme", retry_period_s: float = 3600.0) -> None:
    """Commit one notification per kind, in order, each in its own transaction (as each of a
    task's terminal states is committed)."""
    for number, kind in enumerate(kinds):
        async with store.engine.begin() as connection:
            await enqueue(connection, [Notification(
                tenant, kind, {"task_id": task_id, "tenant": tenant, "n": number},
                task_id=task_id, agent_type="calculator")], utcnow(), retry_period_s)


async def until(condition: Callable[[], Any], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await _holds(condition):
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not hold in time")
        await asyncio.sleep(0.02)


async def _holds(condition: Callable[[], Any]) -> bool:
    value = condition()
    return bool(await value) if asyncio.iscoroutine(value) else bool(value)


async def settled(store: WebhookStore, tenant: str = "acme") -> list[Delivery]:
    found, _ = await store.list_deliveries(tenant, limit=1000)
    return found if all(d.status != "pending" for d in found) else []


async def subscribe(store: WebhookStore, url: str, tenant: str = "acme") -> tuple[str, str]:
    subscription, secret = await store.create_subscription(tenant, url, ["task.*"])
    return subscription.id, secret


async def test_a_500_then_a_200_is_delivered_on_attempt_two_with_both_recorded(
    store: WebhookStore, receiver: Receiver,
) -> None:
    receiver.answers = [web.Response(status=500, text="database busy")]
    _, secret = await subscribe(store, receiver.url)
    await notify(store, "task.succeeded")

    async with Running(store) as running:
        await until(lambda: settled(store))

    (delivery,) = await settled(store)
    found, attempts = await store.get_delivery("acme", delivery.id)
    assert (found.status, found.attempts, found.last_status_code) == ("delivered", 2, 200)
    assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 200)]
    assert attempts[0].error == "HTTP 500 Internal Server Error"
    assert attempts[0].response_excerpt == "database busy" and attempts[1].error is None
    assert [h["webhook-id"] for h, _ in receiver.requests] == [delivery.id, delivery.id]
    headers, body = receiver.requests[-1]
    assert Webhook(secret).verify(body, headers)["type"] == "task.succeeded"
    assert json.loads(body)["data"]["task_id"] == "t" * 32
    assert running.metrics.outcomes == {("acme", "retry"): 1, ("acme", "delivered"): 1}
    assert len(running.metrics.latencies_s) == 1 and running.metrics.latencies_s[0] > 0


async def test_a_tasks_events_arrive_in_commit_order_even_when_the_first_is_retried(
    store: WebhookStore, receiver: Receiver,
) -> None:
    receiver.answers = [web.Response(status=503), web.Response(status=503)]
    await subscribe(store, receiver.url)
    await notify(store, "task.failed", "task.succeeded", "task.dead")

    async with serving() as other, Running(store):
        await subscribe(store, other.url, tenant="globex")
        await notify(store, "task.succeeded", task_id="u" * 32, tenant="globex")
        await until(lambda: settled(store))
        await until(lambda: settled(store, "globex"))

    assert [(b["type"], b["data"]["n"]) for b in receiver.bodies] == [
        ("task.failed", 0)] * 3 + [("task.succeeded", 1), ("task.dead", 2)]
    assert {d.status for d in await settled(store)} == {"delivered"}
    assert [b["data"]["task_id"] for b in other.bodies] == ["u" * 32]  # not held up


async def test_everything_arrives_once_a_receiver_that_was_down_comes_up(
    store: WebhookStore,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = Receiver(port=port)
    await subscribe(store, down.url)
    for number in range(5):
        await notify(store, "task.succeeded", task_id=f"{number:032d}")

    async with Running(store):
        await until(lambda: _all_attempted_at_least(store, 2))
        async with serving(down) as receiver:
            await until(lambda: settled(store))

    assert sorted(b["data"]["task_id"] for b in receiver.bodies) == [
        f"{n:032d}" for n in range(5)]
    for delivery in await settled(store):
        _, attempts = await store.get_delivery("acme", delivery.id)
        assert delivery.status == "delivered" and len(attempts) >= 3
        assert attempts[0].status_code is None and "Connect" in (attempts[0].error or "")


async def _all_attempted_at_least(store: WebhookStore, attempts: int) -> bool:
    found, _ = await store.list_deliveries("acme")
    return bool(found) and all(d.attempts >= attempts for d in found)


@pytest.mark.parametrize("status", [400, 410])
async def test_a_400_or_410_fails_at_once(store: WebhookStore, receiver: Receiver,
                                          status: int) -> None:
    receiver.answers = [web.Response(status=status)]
    await subscribe(store, receiver.url)
    await notify(store, "task.failed")

    async with Running(store) as running:
        await until(lambda: settled(store))

    (delivery,) = await settled(store)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        "failed", 1, status)
    assert len(receiver.requests) == 1
    assert running.metrics.outcomes == {("acme", "failed"): 1}


async def test_a_delivery_past_its_retry_period_fails(store: WebhookStore,
                                                      receiver: Receiver) -> None:
    receiver.answers = [web.Response(status=503) for _ in range(1000)]
    await subscribe(store, receiver.url)
    await notify(store, "task.succeeded", retry_period_s=0.6)

    async with Running(store):
        await until(lambda: settled(store))

    (delivery,) = await settled(store)
    _, attempts = await store.get_delivery("acme", delivery.id)
    assert delivery.status == "failed" and delivery.delivered_at is None
    assert "retry period ended" in (delivery.last_error or "")
    assert "HTTP 503" in (delivery.last_error or "")
    assert len(attempts) >= 2 and attempts[-1].at >= delivery.expires_at
    assert all(a.at < delivery.expires_at for a in attempts[:-1])


async def test_rotation_signs_with_both_secrets_until_the_overlap_ends(
    store: WebhookStore, receiver: Receiver,
) -> None:
    subscription_id, old = await subscribe(store, receiver.url)
    _, new = await store.rotate_secret("acme", subscription_id, overlap_s=3600)
    await notify(store, "task.succeeded", task_id="a" * 32)
    async with Running(store):
        await until(lambda: len(receiver.requests) == 1)
        _, newest = await store.rotate_secret("acme", subscription_id, overlap_s=0)
        await notify(store, "task.succeeded", task_id="b" * 32)
        await until(lambda: len(receiver.requests) == 2)

    (during, during_body), (after, after_body) = receiver.requests
    assert Webhook(old).verify(during_body, during) and Webhook(new).verify(during_body, during)
    assert Webhook(newest).verify(after_body, after)
    for stale in (old, new):
        with pytest.raises(WebhookVerificationError):
            Webhook(stale).verify(after_body, after)


async def test_an_address_turned_private_fails_the_delivery_with_nothing_sent(
    store: WebhookStore, receiver: Receiver,
) -> None:
    answers = ["93.184.216.34", "10.0.0.5"]

    async def lookup(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    policy = DestinationPolicy(lookup=lookup)
    url = f"http://hooks.example.test:{receiver.port}/hook"
    from actors.webhook_sender import check_destination

    await check_destination(url, policy)  # what the subscription checked: a public address
    await subscribe(store, url)
    await notify(store, "task.succeeded")

    async with Running(store, FAST, policy):
        await until(lambda: settled(store))

    (delivery,) = await settled(store)
    assert delivery.status == "failed" and delivery.attempts == 1
    assert "10.0.0.5, a private address" in (delivery.last_error or "")
    assert receiver.requests == []


async def test_allowed_networks_pass_loopback_and_refuse_other_private_receivers(
    store: WebhookStore, receiver: Receiver,
) -> None:
    await subscribe(store, receiver.url)
    await subscribe(store, f"http://10.0.0.5:{receiver.port}/hook")
    await notify(store, "task.succeeded")

    async with Running(store):
        await until(lambda: settled(store))

    by_url = {d.url: d for d in await settled(store)}
    assert by_url[receiver.url].status == "delivered"
    refused = by_url[f"http://10.0.0.5:{receiver.port}/hook"]
    assert refused.status == "failed" and "private address" in (refused.last_error or "")
    assert len(receiver.requests) == 1


async def test_a_tenants_deliveries_never_reach_another_tenants_receiver(
    store: WebhookStore, receiver: Receiver,
) -> None:
    async with serving() as other:
        await subscribe(store, receiver.url, tenant="acme")
        await subscribe(store, other.url, tenant="globex")
        await notify(store, "task.succeeded", tenant="acme")

        async with Running(store):
            await until(lambda: settled(store, "acme"))
            await asyncio.sleep(0.2)

        assert [b["data"]["tenant"] for b in receiver.bodies] == ["acme"]
        assert other.requests == []


class SlowReads:
    """The store, with every read of due deliveries answered 50 ms late (a busy database):
    deliveries in flight finish while the read's now stale answer is on its way."""

    def __init__(self, store: WebhookStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def due_deliveries(self, now: Any, limit: int = 100) -> list[Delivery]:
        found = await self.store.due_deliveries(now, limit)
        await asyncio.sleep(0.05)
        return found


async def test_each_delivery_is_sent_once_even_when_reads_lag(store: WebhookStore,
                                                              receiver: Receiver) -> None:
    await subscribe(store, receiver.url)
    for number in range(40):
        await notify(store, "task.succeeded", task_id=f"{number:032d}")
    sender = WebhookSender(LOOPBACK_ALLOWED)
    loop = DeliveryLoop(SlowReads(store), sender, WebhookSettings(  # type: ignore[arg-type]
        max_in_flight=4, allowed_networks=("127.0.0.1/32",)))

    await loop.run_until_idle()
    await sender.close()

    ids = [headers["webhook-id"] for headers, _ in receiver.requests]
    assert len(ids) == len(set(ids)) == 40
    assert {d.status for d in await settled(store)} == {"delivered"}


class Outage(SlowReads):
    """The store, its first two reads of due deliveries failing as if the database were down."""

    failures = 2

    async def due_deliveries(self, now: Any, limit: int = 100) -> list[Delivery]:
        if self.failures:
            self.failures -= 1
            raise StorageError("the database is restarting")
        return await self.store.due_deliveries(now, limit)


async def test_the_loop_outlives_a_storage_outage_and_then_delivers(
    store: WebhookStore, receiver: Receiver,
) -> None:
    await subscribe(store, receiver.url)
    await notify(store, "task.succeeded")
    outage = Outage(store)
    sender = WebhookSender(LOOPBACK_ALLOWED)
    loop = DeliveryLoop(outage, sender, FAST)  # type: ignore[arg-type]
    running = asyncio.create_task(loop.run())
    try:
        await until(lambda: settled(store))
        assert loop.last_error is None  # cleared by the first pass that went well
    finally:
        await loop.stop()
        await asyncio.wait_for(running, 5)
        await sender.close()

    assert outage.failures == 0 and len(receiver.requests) == 1
    assert (await settled(store))[0].status == "delivered"


async def test_at_most_max_in_flight_are_sent_at_once(store: WebhookStore,
                                                      receiver: Receiver) -> None:
    receiver.delay_s = 0.3
    await subscribe(store, receiver.url)
    for number in range(6):
        await notify(store, "task.succeeded", task_id=f"{number:032d}")
    loop = DeliveryLoop(store, WebhookSender(LOOPBACK_ALLOWED), WebhookSettings(
        max_in_flight=2, allowed_networks=("127.0.0.1/32",)))

    first = await loop.run_once()
    again = await loop.run_once()  # both slots are taken
    await asyncio.sleep(0.1)
    assert (first, again, len(receiver.requests)) == (2, 0, 2)
    await loop.run_until_idle()
    await loop.sender.close()

    assert len(receiver.requests) == 6
    assert {d.status for d in await settled(store)} == {"delivered"}


def delivery(attempts: int, expires_in_s: float) -> Delivery:
    now = utcnow()
    return Delivery("msg_1", "acme", "wh_1", "https://x", "task.failed", "t", None, {},
                    "pending", attempts, now, now, now + timedelta(seconds=expires_in_s), None,
                    None, None, 1)


def test_backoff_is_full_jitter_doubling_to_the_cap_and_honours_retry_after() -> None:
    settings = WebhookSettings(retry_base_s=5, retry_max_s=3600)
    assert [backoff_s(n, settings, draw=lambda: 1.0) for n in (1, 2, 3, 11, 50)] == [
        5, 10, 20, 3600, 3600]
    assert backoff_s(3, settings, draw=lambda: 0.5) == 10
    assert backoff_s(1, settings, retry_after_s=120, draw=lambda: 0.5) == 120
    assert backoff_s(1, settings, retry_after_s=10**6, draw=lambda: 0.5) == 3600


def test_a_retry_beyond_the_period_is_moved_to_its_end_and_then_fails() -> None:
    settings = WebhookSettings(retry_base_s=5, retry_max_s=3600)
    sent = Sent(RETRY, 503, "HTTP 503", None, 1.0)
    soon = delivery(attempts=3, expires_in_s=10)
    now = utcnow()

    outcome, at, _ = next_step(soon, sent, now, settings, draw=lambda: 1.0)
    assert outcome == RETRY and at == soon.expires_at

    outcome, at, error = next_step(soon, sent, soon.expires_at, settings)
    assert (outcome, at) == (FAILED, None) and "retry period ended" in (error or "")
