"""Events going out: the loop that sends the webhook outbox, and the supervised actor that runs
it, `WebhookDeliveryActor`, named `DELIVERY_ACTOR_NAME` in the platform's namespace.

    loop = DeliveryLoop(store, WebhookSender(policy), settings)
    await loop.run_once()            # send what is due now (tests); `run()` loops for ever
    handle.wake.remote()             # the orchestrator, after it commits notifications

The loop reads the pending deliveries that are due (`WebhookStore.due_deliveries`), sends them
concurrently, at most `max_in_flight` at once and never two of one ordering key (one receiver
and one task or run) at once, and records each attempt with the delivery's new state in one
transaction (`WebhookStore.record_attempts`: the attempts that end while one transaction is
written share the next, a group commit). A failed attempt that may succeed later is retried
after an exponential backoff with full jitter, from `retry_base_s` doubling up to `retry_max_s`
(at least as long as the receiver's Retry-After, within `retry_max_s`); once the delivery's
retry period has ended (`expires_at`), the last attempt is made then and a delivery still not
accepted fails.

Fault-tolerance contract
- Durable (in storage): every delivery, its state, attempts and next attempt time. The outbox is
  written with the event that causes it, so nothing is lost while this actor is down.
- At least once: a delivery sent but not yet recorded when the process dies is sent again after
  the restart, with the same `webhook-id` (the delivery's id), so receivers drop duplicates.
  The store records an attempt only while the delivery is still pending at the attempt before
  it: a late result cannot overwrite a redelivery.
- Rebuilt on (re)start: the in-flight set (empty), the kept HTTP connections, the store's engine.
- The loop never dies: a storage outage or an unexpected error is logged, and the loop goes on
  after a pause; a delivery whose handling raised waits `FAULT_COOLDOWN_S` before it is tried
  again.

A plain class: `actors.ray_backend.RayBackend.start_webhook_delivery` makes it a detached actor
that Ray restarts forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from actors.config import WebhookSettings
from actors.logs import configure_logging
from actors.webhook_metrics import WebhookMetrics, webhook_metrics
from actors.webhook_sender import DELIVERED, FAILED, RETRY, DestinationPolicy, Sent, WebhookSender
from storage.errors import StorageError
from storage.messages import utcnow
from storage.webhook_records import Delivery
from storage.webhook_store import AttemptRecord

log = logging.getLogger("ymera.webhooks.delivery")

DELIVERY_ACTOR_NAME: Final = "ymera-webhook-delivery"
GAUGE_INTERVAL_S: Final = 5.0
FAULT_COOLDOWN_S: Final = 5.0
STORE_RETRY_DELAYS_S: Final = (0.5, 1.0, 2.0, 5.0)


class DeliveryStore(Protocol):
    """What the loop needs of `storage.webhook_store.WebhookStore`."""

    async def due_deliveries(self, now: datetime, limit: int = 100) -> list[Delivery]: ...

    async def signing_secrets(self, tenant: str, subscription_id: str | None) -> list[str]: ...

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[bool]: ...

    async def delivery_gauges(self, now: datetime) -> dict[str, Any]: ...


def ordering_key(delivery: Delivery) -> str:
    """One receiver (a subscription, or the task's callback) and one task or run: the
    deliveries of a key go out one at a time, in commit order."""
    return f"{delivery.subscription_id or 'cb'}:{delivery.task_id or delivery.run_id or '-'}"


def encoded_body(delivery: Delivery) -> bytes:
    """The bytes a receiver gets (and the signature covers): the stored payload as JSON."""
    return json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()


def backoff_s(attempt: int, settings: WebhookSettings, retry_after_s: float | None = None,
              draw: Callable[[], float] = random.random) -> float:
    """The pause after failed attempt `attempt` (1-based): full jitter up to `retry_base_s *
    2^(attempt-1)`, capped at `retry_max_s`, and at least the receiver's Retry-After (within
    `retry_max_s`)."""
    ceiling = min(settings.retry_max_s, settings.retry_base_s * 2.0 ** min(attempt - 1, 60))
    pause = draw() * ceiling
    if retry_after_s is not None:
        pause = max(pause, retry_after_s)
    return min(pause, settings.retry_max_s)


def next_step(delivery: Delivery, sent: Sent, now: datetime, settings: WebhookSettings,
              draw: Callable[[], float] = random.random,
              ) -> tuple[str, datetime | None, str | None]:
    """What to record after an attempt at `delivery` ended `now`: (outcome, next attempt time,
    error). A retry that would fall after the delivery's retry period is moved to its end;
    past the end, the delivery fails."""
    if sent.outcome != RETRY:
        return sent.outcome, None, sent.error
    if now >= delivery.expires_at:
        return FAILED, None, (f"{sent.error}; given up: the retry period ended at "
                              f"{delivery.expires_at.isoformat()}")
    pause = backoff_s(delivery.attempts + 1, settings, sent.retry_after_s, draw)
    return RETRY, min(now + timedelta(seconds=pause), delivery.expires_at), sent.error


class DeliveryLoop:
    """Sends the outbox (see the module). `clock` and `draw` are replaceable for tests."""

    def __init__(self, store: DeliveryStore, sender: WebhookSender, settings: WebhookSettings,
                 metrics: WebhookMetrics | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 draw: Callable[[], float] = random.random) -> None:
        self.store = store
        self.sender = sender
        self.settings = settings
        self.metrics = metrics or WebhookMetrics()
        self.clock = clock
        self.draw = draw
        self.in_flight: dict[str, asyncio.Task[None]] = {}  # by delivery id
        self._keys: set[str] = set()
        self._cooldown: dict[str, float] = {}  # delivery id -> monotonic time it may go again
        self._finished_while_reading: set[str] | None = None
        self._wakeup = asyncio.Event()
        self._to_record: list[tuple[AttemptRecord, asyncio.Future[bool]]] = []
        self._recording: asyncio.Task[None] | None = None
        self._stopped = False
        self.last_error: str | None = None

    def wake(self) -> None:
        """Look for due deliveries now rather than at the next poll."""
        self._wakeup.set()

    async def run_once(self) -> int:
        """Start sending what is due and may go now; how many were started."""
        free = self.settings.max_in_flight - len(self.in_flight)
        if free <= 0:
            return 0
        # a delivery finished while the due ones were read may be in that read as still pending
        finished: set[str] = set()
        self._finished_while_reading = finished
        try:
            due = await self.store.due_deliveries(
                self.clock(), limit=len(self.in_flight) + len(self._cooldown) + free)
        finally:
            self._finished_while_reading = None
        now_mono = time.monotonic()
        self._cooldown = {k: t for k, t in self._cooldown.items() if t > now_mono}
        secrets: dict[tuple[str, str | None], asyncio.Future[list[str]]] = {}
        started = 0
        for delivery in due:
            key = ordering_key(delivery)
            if (delivery.id in self.in_flight or key in self._keys
                    or delivery.id in self._cooldown or delivery.id in finished):
                continue
            if started >= free:
                break
            owner = (delivery.tenant, delivery.subscription_id)
            if owner not in secrets:
                secrets[owner] = asyncio.ensure_future(
                    self.store.signing_secrets(delivery.tenant, delivery.subscription_id))
            self._keys.add(key)
            self.in_flight[delivery.id] = asyncio.create_task(
                self._deliver(delivery, key, secrets[owner]), name=f"webhook-{delivery.id}")
            started += 1
        for future in secrets.values():  # a future no task awaited must not warn when it fails
            future.add_done_callback(_consume)
        return started

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the deliveries in flight to finish (tests, shutdown)."""
        if self.in_flight:
            await asyncio.wait(list(self.in_flight.values()), timeout=timeout_s)

    async def run_until_idle(self, timeout_s: float = 30.0) -> None:
        """Send until nothing is due or in flight (tests and benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            started = await self.run_once()
            if not started and not self.in_flight:
                return
            if self.in_flight:
                await asyncio.wait(list(self.in_flight.values()),
                                   return_when=asyncio.FIRST_COMPLETED)
        raise TimeoutError(f"the outbox was not idle within {timeout_s:g} s")

    async def run(self) -> None:
        """Send for ever (until `stop`): after each pass wait for a wake-up, a finished
        delivery or `poll_interval_s`; refresh the backlog gauges every `GAUGE_INTERVAL_S`."""
        failures = 0
        gauges_at = 0.0
        while not self._stopped:
            try:
                await self.run_once()
                if time.monotonic() >= gauges_at:
                    gauges_at = time.monotonic() + GAUGE_INTERVAL_S
                    gauges = await self.store.delivery_gauges(self.clock())
                    self.metrics.backlog(int(gauges["pending"]),
                                         float(gauges["oldest_pending_age_s"]))
                failures, self.last_error = 0, None
            except Exception as exc:  # the loop never dies: log, pause, go on
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                pause = STORE_RETRY_DELAYS_S[min(failures, len(STORE_RETRY_DELAYS_S)) - 1]
                log.error("webhook delivery pass failed (%s); next pass in %.1fs",
                          self.last_error, pause, exc_info=not isinstance(exc, StorageError))
                await asyncio.sleep(pause)
                continue
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.settings.poll_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wakeup.clear()

    async def stop(self) -> None:
        """End `run` after its current pass and wait for the deliveries in flight."""
        self._stopped = True
        self._wakeup.set()
        await self.drain()

    async def _deliver(self, delivery: Delivery, key: str,
                       secrets: Awaitable[list[str]]) -> None:
        try:
            await self._attempt(delivery, await secrets)
        except Exception as exc:  # storage down, or a bug: this delivery waits, the loop goes on
            self._cooldown[delivery.id] = time.monotonic() + FAULT_COOLDOWN_S
            log.error("webhook delivery %s could not be completed (%s: %s); it stays pending",
                      delivery.id, type(exc).__name__, exc,
                      exc_info=not isinstance(exc, StorageError))
        finally:
            self.in_flight.pop(delivery.id, None)
            self._keys.discard(key)
            if self._finished_while_reading is not None:
                self._finished_while_reading.add(delivery.id)
            # the next delivery of this key may be due now: look once a quarter of the slots
            # is free (one read refills several), or at once when nothing else is in flight
            refill = max(1, self.settings.max_in_flight // 4)
            if len(self.in_flight) <= self.settings.max_in_flight - refill:
                self._wakeup.set()

    async def _attempt(self, delivery: Delivery, secrets: list[str]) -> None:
        at = self.clock()
        number = delivery.attempts + 1
        if not secrets:  # the subscription was deleted since the delivery was read
            sent = Sent(FAILED, None, "not sent: its subscription no longer exists", None, 0.0)
        else:
            sent = await self.sender.send(delivery.url, delivery.id, encoded_body(delivery),
                                          secrets, at)
        ended = self.clock()
        outcome, next_attempt_at, error = next_step(delivery, sent, ended, self.settings,
                                                    self.draw)
        recorded = await self._record(AttemptRecord(
            delivery.id, number, at, sent.status_code, error, sent.response_excerpt,
            sent.duration_ms, outcome, next_attempt_at))
        if recorded is False:  # redelivered, or its subscription deleted, meanwhile
            return
        self.metrics.attempted(delivery.tenant, outcome)
        if outcome == DELIVERED:
            self.metrics.delivered((ended - delivery.created_at).total_seconds())
        elif outcome == FAILED:
            log.warning("webhook delivery %s (%s, tenant %s) failed after %d attempt(s): %s",
                        delivery.id, delivery.event_kind, delivery.tenant, number, error)


    async def _record(self, record: AttemptRecord) -> bool:
        """Record an attempt in the next group commit: the attempts that finish while one
        transaction is being written share the next one."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._to_record.append((record, future))
        if self._recording is None or self._recording.done():
            self._recording = asyncio.create_task(self._write_records(), name="webhook-records")
        return await future

    async def _write_records(self) -> None:
        while self._to_record:
            batch, self._to_record = self._to_record, []
            try:
                written = await self.store.record_attempts([record for record, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), ok in zip(batch, written):
                if not future.done():
                    future.set_result(ok)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class WebhookDeliveryActor:
    """The platform's webhook sender (see the module's docstring): runs a `DeliveryLoop` over
    the platform's database from the moment it starts."""

    def __init__(self, settings: WebhookSettings, database_url: str, log_format: str = "auto",
                 log_level: str = "INFO") -> None:
        configure_logging(log_format, log_level)
        self.settings = settings
        self.database_url = database_url
        self.loop: DeliveryLoop | None = None
        self._ready = asyncio.Event()
        self._running = asyncio.get_running_loop().create_task(self._run(),
                                                               name="webhook-delivery")

    async def _run(self) -> None:
        from storage.webhook_store import WebhookStore

        failures = 0
        while True:
            try:
                store = await WebhookStore.open(self.database_url)
                break
            except StorageError as exc:
                delay = STORE_RETRY_DELAYS_S[min(failures, len(STORE_RETRY_DELAYS_S) - 1)]
                failures += 1
                log.error("webhook delivery cannot open storage (%s); retrying in %.1fs", exc,
                          delay)
                await asyncio.sleep(delay)
        policy = DestinationPolicy.from_settings(self.settings.allow_private_networks,
                                                 self.settings.allowed_networks)
        sender = WebhookSender(policy, self.settings.timeout_s)
        self.loop = DeliveryLoop(store, sender, self.settings, webhook_metrics())
        self._ready.set()
        log.info("webhook delivery started: at most %d in flight, retried for %gs",
                 self.settings.max_in_flight, self.settings.retry_period_s)
        try:
            await self.loop.run()
        finally:
            await sender.close()
            await store.close()

    async def ready(self) -> dict[str, Any]:
        """Wait until storage is open; the settings in force."""
        await self._ready.wait()
        return {"max_in_flight": self.settings.max_in_flight,
                "retry_period_s": self.settings.retry_period_s}

    async def wake(self) -> None:
        """Look for due deliveries now (the orchestrator calls this, without waiting, after it
        commits notifications)."""
        if self.loop is not None:
            self.loop.wake()

    async def status(self) -> dict[str, Any]:
        """Deliveries in flight now and the last pass's error (None when it went well)."""
        await self._ready.wait()
        assert self.loop is not None  # set before ready
        return {"in_flight": len(self.loop.in_flight), "last_error": self.loop.last_error}


def find_webhook_delivery(namespace: str) -> Any | None:
    """The handle of the delivery actor of `namespace`, or None when there is none."""
    import ray

    try:
        return ray.get_actor(DELIVERY_ACTOR_NAME, namespace=namespace)
    except ValueError:
        return None
