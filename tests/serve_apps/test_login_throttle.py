"""The per-account login throttle, in process and shared through Redis: free failures, doubling
waits with a cap, a success clearing the account, accounts keyed by tenant and username."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from serve_apps.login_throttle import (
    LocalLoginThrottle, LoginThrottle, RedisLoginThrottle, ThrottlePolicy,
)
from tests.support.redis_service import REDIS_URL, redis_namespace

FAST = ThrottlePolicy(free_failures=3, base_delay_s=0.2, max_delay_s=0.8)


def test_the_delay_doubles_after_the_free_failures_and_is_capped() -> None:
    policy = ThrottlePolicy(free_failures=5, base_delay_s=1.0, max_delay_s=900.0)
    assert [policy.delay_s(n) for n in range(1, 10)] == [0, 0, 0, 0, 1, 2, 4, 8, 16]
    assert policy.delay_s(15) == policy.delay_s(10_000) == 900.0


@pytest.fixture(params=["local", "redis"])
async def throttle(request: pytest.FixtureRequest) -> AsyncIterator[LoginThrottle]:
    if request.param == "local":
        yield LocalLoginThrottle(FAST)
        return
    async with redis_namespace() as namespace:
        shared = RedisLoginThrottle(REDIS_URL, namespace, FAST)
        try:
            yield shared
        finally:
            await shared.close()


async def test_failures_beyond_the_free_ones_make_the_account_wait(
        throttle: LoginThrottle) -> None:
    attempts = [await throttle.attempt("acme", "alice") for _ in range(3)]
    assert all(a.allowed for a in attempts)
    assert [a.failures for a in attempts] == [1, 2, 3]
    assert [a.delay_s for a in attempts] == pytest.approx([0, 0, 0.2])
    refused = await throttle.attempt("acme", "alice")
    assert not refused.allowed and 0 < refused.wait_s <= 0.2
    await asyncio.sleep(0.25)
    fourth = await throttle.attempt("acme", "alice")
    assert fourth.allowed and fourth.delay_s == pytest.approx(0.4)


async def test_the_wait_never_exceeds_the_cap(throttle: LoginThrottle) -> None:
    for _ in range(3):
        await throttle.attempt("acme", "alice")
    for expected in (0.4, 0.8, 0.8):
        await asyncio.sleep((await throttle.attempt("acme", "alice")).wait_s + 0.02)
        attempt = await throttle.attempt("acme", "alice")
        assert attempt.allowed and attempt.delay_s == pytest.approx(expected)


async def test_accounts_are_separate_per_tenant_and_a_success_clears_one(
        throttle: LoginThrottle) -> None:
    for _ in range(3):
        await throttle.attempt("acme", "alice")
    assert not (await throttle.attempt("acme", "alice")).allowed
    assert (await throttle.attempt("globex", "alice")).allowed
    assert (await throttle.attempt("acme", "bob")).allowed
    await throttle.succeeded("acme", "alice")
    assert (await throttle.attempt("acme", "alice")).failures == 1


async def test_concurrent_guesses_cannot_pass_together(throttle: LoginThrottle) -> None:
    attempts = await asyncio.gather(*(throttle.attempt("acme", "alice") for _ in range(20)))
    assert sum(a.allowed for a in attempts) == 3


async def test_the_local_throttle_keeps_a_bounded_number_of_accounts() -> None:
    throttle = LocalLoginThrottle(FAST, max_accounts=10)
    for i in range(50):
        await throttle.attempt("acme", f"user-{i}")
    assert len(throttle._accounts) == 10
