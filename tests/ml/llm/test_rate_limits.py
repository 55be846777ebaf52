"""Per-deployment rate-limit windows, the breaker that skips a deployment at its limit, and
breaker reads remembered for a moment."""

from __future__ import annotations

from ml.llm.breaker_reads import RecentBreakerReads
from ml.llm.config import Deployment
from ml.llm.rate_limits import WINDOW_S, LimitedBreaker, RateLimiter
from ml.llm.resilience import (
    CLOSED, OPEN, BreakerPolicy, BreakerRecord, CircuitBreaker, InMemoryBreakerStore,
)


def limited(rpm: int | None = None, tpm: int | None = None) -> Deployment:
    return Deployment(name="d", group="g", provider="openai", base_url="http://x/v1",
                      model="m", rpm=rpm, tpm=tpm)


def test_requests_per_minute_are_a_sliding_window() -> None:
    now = [0.0]
    limiter = RateLimiter([limited(rpm=2)], clock=lambda: now[0])

    assert limiter.try_acquire("d", 1) and limiter.try_acquire("d", 1)
    assert limiter.try_acquire("d", 1) is None
    assert limiter.wait_s("d", 1) == WINDOW_S
    now[0] = WINDOW_S
    assert limiter.try_acquire("d", 1) is not None


def test_tokens_per_minute_count_what_calls_really_used() -> None:
    now = [0.0]
    limiter = RateLimiter([limited(tpm=1000)], clock=lambda: now[0])
    first = limiter.try_acquire("d", 800)
    assert first is not None and limiter.try_acquire("d", 300) is None

    limiter.settle(first, 100)  # it used far less than its estimate

    assert limiter.try_acquire("d", 300) is not None


def test_an_oversize_call_runs_alone_and_a_released_one_leaves_no_trace() -> None:
    now = [0.0]
    limiter = RateLimiter([limited(rpm=1, tpm=100)], clock=lambda: now[0])

    oversize = limiter.try_acquire("d", 5000)
    assert oversize is not None and limiter.try_acquire("d", 1) is None
    limiter.release(oversize)
    assert limiter.try_acquire("d", 1) is not None
    assert RateLimiter([limited()]).try_acquire("d", 10**9) is not None  # no limits at all


async def test_a_deployment_at_its_limit_is_refused_without_counting_a_failure() -> None:
    store = InMemoryBreakerStore()
    breaker = CircuitBreaker(store, BreakerPolicy(failure_threshold=1))
    limiter = RateLimiter([limited(rpm=1)])
    per_request = LimitedBreaker(breaker, limiter, tokens=10)

    assert (await per_request.admit("d")).allowed
    refused = await per_request.admit("d")

    assert not refused.allowed and "rate limit (1 requests per minute)" in refused.why
    assert (await breaker.record("d")).state == CLOSED


async def test_remembered_breaker_reads_see_their_own_writes_at_once_and_others_later() -> None:
    now = [0.0]
    shared = InMemoryBreakerStore()
    ours = RecentBreakerReads(shared, fresh_s=0.5, clock=lambda: now[0])
    assert await ours.get("d") is None

    opened = BreakerRecord(state=OPEN, opened_at=1.0, version=1)
    await shared.compare_and_set("d", 0, opened)  # another gateway opens it
    assert await ours.get("d") is None  # not yet seen here
    now[0] = 0.6
    assert await ours.get("d") == opened

    closed = BreakerRecord(state=CLOSED, version=2)
    assert await ours.compare_and_set("d", 1, closed)
    assert await ours.get("d") == closed
    assert not await ours.compare_and_set("d", 1, opened)  # a stale version still loses
    assert await shared.get("d") == closed
