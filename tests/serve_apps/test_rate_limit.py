"""Rate limits against a real Redis and in process: budgets, refills, isolation, headers, and
one budget shared by two replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from serve_apps.rate_limit import (
    Decision,
    LocalRateLimiter,
    RateLimit,
    RateLimiter,
    RedisRateLimiter,
)
from storage import redis_keys
from storage.errors import InvalidRequest, StorageError
from tests.support.redis_service import REDIS_URL, redis_namespace

LIMITER_KINDS = ("redis", "local")


@pytest.fixture(params=LIMITER_KINDS)
async def replicas(
        request: pytest.FixtureRequest) -> AsyncIterator[tuple[RateLimiter, RateLimiter]]:
    """Two limiters standing for two API replicas; in process there is only one to share."""
    if request.param == "local":
        limiter = LocalRateLimiter()
        yield limiter, limiter
        return
    async with redis_namespace() as namespace:
        first = RedisRateLimiter(REDIS_URL, namespace)
        second = RedisRateLimiter(REDIS_URL, namespace)
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()


async def spend(limiter: RateLimiter, count: int, limit: RateLimit,
                identity: str = "key-1", scope: str = "key") -> list[Decision]:
    return [await limiter.check(scope, identity, limit) for _ in range(count)]


async def test_the_budget_is_spent_then_requests_are_refused(
        replicas: tuple[RateLimiter, RateLimiter]) -> None:
    limiter, _ = replicas
    limit = RateLimit(requests=3, per_s=3.0)
    decisions = await spend(limiter, 4, limit)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.retry_after_s is not None and 0.9 < refused.retry_after_s <= 1.0
    assert 2.9 < refused.reset_s <= 3.0
    assert refused.headers()["Retry-After"] == "1"


async def test_two_replicas_share_one_budget(replicas: tuple[RateLimiter, RateLimiter]) -> None:
    first, second = replicas
    limit = RateLimit(requests=4, per_s=10.0)
    allowed = [(await (first if i % 2 else second).check("key", "key-1", limit)).allowed
               for i in range(6)]
    assert allowed == [True, True, True, True, False, False]


async def test_the_budget_refills_over_the_period(
        replicas: tuple[RateLimiter, RateLimiter]) -> None:
    limiter, _ = replicas
    limit = RateLimit(requests=2, per_s=0.4)
    assert [d.allowed for d in await spend(limiter, 3, limit)] == [True, True, False]
    await asyncio.sleep(0.25)  # one interval (0.2 s) later: one request's worth is back
    assert [d.allowed for d in await spend(limiter, 2, limit)] == [True, False]
    await asyncio.sleep(0.45)  # a whole period later: the whole budget is back
    assert [d.allowed for d in await spend(limiter, 3, limit)] == [True, True, False]


async def test_identities_and_scopes_have_separate_budgets(
        replicas: tuple[RateLimiter, RateLimiter]) -> None:
    limiter, _ = replicas
    limit = RateLimit(requests=2, per_s=10.0)
    assert [d.allowed for d in await spend(limiter, 3, limit, "key-1")] == [True, True, False]
    assert [d.allowed for d in await spend(limiter, 2, limit, "key-2")] == [True, True]
    assert (await limiter.check("tenant", "key-1", limit)).allowed


async def test_asking_without_spending_leaves_the_budget_as_it_was(
        replicas: tuple[RateLimiter, RateLimiter]) -> None:
    limiter, _ = replicas
    limit = RateLimit(requests=2, per_s=10.0)
    asked = [await limiter.check("auth_failure", "10.0.0.1", limit, spend=False)
             for _ in range(5)]
    assert all(d.allowed for d in asked)
    assert [d.allowed for d in await spend(limiter, 3, limit, "10.0.0.1", "auth_failure")] \
        == [True, True, False]
    assert not (await limiter.check("auth_failure", "10.0.0.1", limit, spend=False)).allowed


async def test_decisions_carry_the_standard_headers(
        replicas: tuple[RateLimiter, RateLimiter]) -> None:
    limiter, _ = replicas
    limit = RateLimit(requests=5, per_s=10.0)
    first = await limiter.check("key", "key-1", limit)
    assert first.headers() == {
        "RateLimit-Limit": "5", "RateLimit-Remaining": "4", "RateLimit-Reset": "2"}
    *_, refused = await spend(limiter, 5, limit)
    assert refused.headers() == {"RateLimit-Limit": "5", "RateLimit-Remaining": "0",
                                 "RateLimit-Reset": "10", "Retry-After": "2"}


def test_header_seconds_are_whole_and_rounded_up() -> None:
    refused = Decision(allowed=False, limit=10, remaining=0, reset_s=2.1, retry_after_s=0.01)
    assert refused.headers() == {"RateLimit-Limit": "10", "RateLimit-Remaining": "0",
                                 "RateLimit-Reset": "3", "Retry-After": "1"}
    allowed = Decision(allowed=True, limit=10, remaining=9, reset_s=0.5)
    assert "Retry-After" not in allowed.headers()


async def test_redis_budgets_expire_on_their_own() -> None:
    async with redis_namespace() as namespace:
        limiter = RedisRateLimiter(REDIS_URL, namespace)
        client = Redis.from_url(REDIS_URL)
        try:
            await limiter.check("key", "key-1", RateLimit(requests=10, per_s=60.0))
            ttl_ms = await client.pttl(redis_keys.rate_limit_key(namespace, "key", "key-1"))
            assert 5_000 < ttl_ms <= 6_000  # one interval: the time until the budget is full
        finally:
            await client.aclose()
            await limiter.close()


async def test_an_unreachable_redis_fails_closed_with_a_storage_error() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", "ns")
    try:
        with pytest.raises(StorageError, match="rate limiter could not reach Redis"):
            await limiter.check("key", "key-1", RateLimit(requests=1, per_s=1.0))
    finally:
        await limiter.close()


@pytest.mark.parametrize("requests, per_s", [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_a_rate_limit_needs_a_positive_budget_and_period(requests: int, per_s: float) -> None:
    with pytest.raises(InvalidRequest):
        RateLimit(requests=requests, per_s=per_s)


async def test_a_bad_scope_is_refused_before_anything_is_counted() -> None:
    with pytest.raises(InvalidRequest):
        await LocalRateLimiter().check("bad:scope", "key-1", RateLimit(requests=1, per_s=1.0))
