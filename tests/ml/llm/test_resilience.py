"""Retry policy and circuit breakers: backoff with jitter and Retry-After, the breaker's states,
one probe while half-open under concurrency, and state that outlives a restart (SQL, Redis)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ml.llm.resilience import (
    CLOSED, HALF_OPEN, OPEN, BreakerPolicy, BreakerStore, CircuitBreaker, InMemoryBreakerStore,
    RetryPolicy,
)
from ml.llm.types import BadModelRequest, ProviderTimeout, ProviderUnavailable, RateLimited
from storage.database import migrate_async
from storage.errors import InvalidRequest
from storage.llm_breakers import RedisBreakerStore, SqlBreakerStore
from tests.support.databases import database_url_fixture
from tests.support.redis_service import REDIS_URL, redis_namespace

POLICY = BreakerPolicy(failure_threshold=3, window_s=60, cooldown_s=30, probe_timeout_s=120)
STORE_KINDS = ("memory", "sqlite", "postgresql", "redis")


class Clock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- retry policy -------------------------------------------------------------------------


def test_backoff_grows_exponentially_up_to_its_cap_with_full_jitter() -> None:
    policy = RetryPolicy(attempts=6, base_delay_s=0.5, max_delay_s=3.0)
    error = ProviderUnavailable("502 from upstream", "primary")

    highest = [policy.delay_before_retry(n, error, uniform=lambda: 1.0) for n in range(1, 6)]
    lowest = [policy.delay_before_retry(n, error, uniform=lambda: 0.0) for n in range(1, 6)]
    halfway = policy.delay_before_retry(3, error, uniform=lambda: 0.5)

    assert highest == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert lowest == [0.0] * 5
    assert halfway == 1.0


def test_retry_after_is_honoured_and_a_longer_one_is_not_waited_for() -> None:
    policy = RetryPolicy(attempts=3, base_delay_s=0.5, max_delay_s=8.0, max_retry_after_s=10.0)

    assert policy.delay_before_retry(1, RateLimited("429", "p", retry_after_s=4.0),
                                     uniform=lambda: 0.0) == 4.0
    assert policy.delay_before_retry(2, RateLimited("429", "p", retry_after_s=0.1),
                                     uniform=lambda: 1.0) == 1.0  # never shorter than backoff
    assert policy.delay_before_retry(1, RateLimited("429", "p", retry_after_s=11.0)) is None


def test_no_retry_for_errors_that_will_not_pass_or_once_attempts_are_used_up() -> None:
    policy = RetryPolicy(attempts=2)

    assert policy.delay_before_retry(1, BadModelRequest("400: bad model", "p")) is None
    assert policy.delay_before_retry(2, ProviderTimeout("timed out", "p")) is None
    assert policy.delay_before_retry(1, ProviderTimeout("timed out", "p")) is not None


@pytest.mark.parametrize(("make", "message"), [
    (lambda: RetryPolicy(attempts=0), "attempts must be at least 1"),
    (lambda: RetryPolicy(base_delay_s=5, max_delay_s=1), "base_delay_s <= max_delay_s"),
    (lambda: RetryPolicy(max_retry_after_s=-1), "max_retry_after_s must not be negative"),
    (lambda: BreakerPolicy(failure_threshold=0), "failure_threshold must be at least 1"),
    (lambda: BreakerPolicy(cooldown_s=0), "cooldown_s must be positive"),
])
def test_bad_policies_are_refused_clearly(make: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        make()


# --- breaker stores -----------------------------------------------------------------------


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def empty_database_url(store_kind: str, tmp_path: Path) -> Iterator[str | None]:
    if store_kind in ("sqlite", "postgresql"):
        yield from database_url_fixture(store_kind, tmp_path)
    else:
        yield None


@pytest.fixture
async def open_store(store_kind: str, empty_database_url: str | None,
                     ) -> AsyncIterator[Callable[[], Any]]:
    """Opens a new store object over the same state each time it is called (a restarted or
    another gateway); the in-memory store is one object, there is nothing else to reopen."""
    async with contextlib.AsyncExitStack() as stack:
        if store_kind == "memory":
            memory = InMemoryBreakerStore()

            async def reopen() -> BreakerStore:
                return memory
        elif store_kind == "redis":
            namespace = await stack.enter_async_context(redis_namespace())

            async def reopen() -> BreakerStore:
                store = RedisBreakerStore(REDIS_URL, namespace)
                stack.push_async_callback(store.close)
                return store
        else:
            assert empty_database_url is not None
            await migrate_async(empty_database_url)
            url = empty_database_url

            async def reopen() -> BreakerStore:
                store = await SqlBreakerStore.open(url)
                stack.push_async_callback(store.close)
                return store
        yield reopen


async def _fail(breaker: CircuitBreaker, deployment: str, times: int) -> None:
    for _ in range(times):
        admission = await breaker.admit(deployment)
        assert admission.allowed
        await breaker.record_failure(admission)


async def test_opens_after_threshold_failures_within_the_window(open_store) -> None:
    clock = Clock()
    breaker = CircuitBreaker(await open_store(), POLICY, clock)
    await _fail(breaker, "primary", 2)
    assert (await breaker.admit("primary")).allowed

    await _fail(breaker, "primary", 1)

    refused = await breaker.admit("primary")
    assert (refused.allowed, (await breaker.record("primary")).state) == (False, OPEN)
    assert "circuit open for another 30.0 s" in refused.why
    assert (await breaker.admit("secondary")).allowed  # one breaker per deployment


async def test_failures_spread_over_windows_do_not_open_it(open_store) -> None:
    clock = Clock()
    breaker = CircuitBreaker(await open_store(), POLICY, clock)
    await _fail(breaker, "primary", 2)
    clock.now += 61
    await _fail(breaker, "primary", 2)

    assert (await breaker.record("primary")).state == CLOSED
    assert (await breaker.admit("primary")).allowed


async def test_successes_of_a_closed_breaker_write_nothing(open_store) -> None:
    store = await open_store()
    breaker = CircuitBreaker(store, POLICY, Clock())
    for _ in range(5):
        await breaker.record_success(await breaker.admit("primary"))

    assert await store.get("primary") is None


async def test_half_open_admits_exactly_one_probe_among_concurrent_callers(open_store) -> None:
    clock = Clock()
    breakers = [CircuitBreaker(await open_store(), POLICY, clock) for _ in range(4)]
    await _fail(breakers[0], "primary", 3)
    clock.now += 31

    admissions = await asyncio.gather(
        *(breakers[i % 4].admit("primary") for i in range(20)))

    probes = [a for a in admissions if a.allowed]
    assert len(probes) == 1 and probes[0].probe
    assert all("probe call is in flight" in a.why for a in admissions if not a.allowed)
    assert (await breakers[1].record("primary")).state == HALF_OPEN

    await breakers[2].record_success(probes[0])

    assert (await breakers[3].record("primary")).state == CLOSED
    assert all([(await b.admit("primary")).allowed for b in breakers])


async def test_a_failed_probe_opens_it_for_another_cooldown(open_store) -> None:
    clock = Clock()
    breaker = CircuitBreaker(await open_store(), POLICY, clock)
    await _fail(breaker, "primary", 3)
    clock.now += 31
    probe = await breaker.admit("primary")

    await breaker.record_failure(probe)

    assert (await breaker.record("primary")).state == OPEN
    clock.now += 29
    assert not (await breaker.admit("primary")).allowed
    clock.now += 2
    assert (await breaker.admit("primary")).probe


async def test_a_probe_that_never_reports_frees_its_slot(open_store) -> None:
    clock = Clock()
    breaker = CircuitBreaker(await open_store(), POLICY, clock)
    await _fail(breaker, "primary", 3)
    clock.now += 31
    lost = await breaker.admit("primary")
    assert lost.probe

    clock.now += 119
    assert not (await breaker.admit("primary")).allowed
    clock.now += 2
    second = await breaker.admit("primary")

    assert second.probe
    await breaker.record_success(second)
    assert (await breaker.record("primary")).state == CLOSED


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql", "redis"])
async def test_state_survives_a_restart_and_is_shared_by_replicas(open_store) -> None:
    clock = Clock()
    before = CircuitBreaker(await open_store(), POLICY, clock)
    await _fail(before, "primary", 3)

    after_restart = CircuitBreaker(await open_store(), POLICY, clock)
    replica = CircuitBreaker(await open_store(), POLICY, clock)

    assert not (await after_restart.admit("primary")).allowed
    clock.now += 31
    probe = await after_restart.admit("primary")
    assert probe.probe
    assert not (await replica.admit("primary")).allowed
    await after_restart.record_failure(probe)
    assert (await replica.record("primary")).state == OPEN


async def test_an_abandoned_probe_gives_its_slot_back_at_once(open_store) -> None:
    clock = Clock()
    breaker = CircuitBreaker(await open_store(), POLICY, clock)
    await _fail(breaker, "primary", 3)
    clock.now += 31
    cancelled = await breaker.admit("primary")
    assert not (await breaker.admit("primary")).allowed

    await breaker.abandon(cancelled)

    assert (await breaker.admit("primary")).probe
