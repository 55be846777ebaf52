"""Per-key and per-tenant rate limits, shared by every API replica through Redis.

The algorithm is GCRA (the generic cell rate algorithm): a budget of `requests` per `per_s`
seconds, any of which may be spent in one burst, refilling smoothly at one request every
`per_s / requests` seconds. Its whole state is one timestamp per identity (the "theoretical
arrival time"), so a check is one atomic read-modify-write.

`RedisRateLimiter` runs that step in one Lua script on the Redis server, timed by the server's
clock (`TIME`): replicas with skewed clocks share one budget and agree on it, and budget keys
expire on their own once fully refilled. `LocalRateLimiter` runs the same step in process for a
single node without Redis. Times are whole microseconds, so a period is honoured to within
`requests` microseconds.

`check(..., spend=False)` asks without spending: whether one more request would be allowed now.

When Redis fails, `check` raises `StorageError`: the limiter fails closed and the API decides
what to answer (by default 503 with Retry-After, not an unmetered request).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

from storage import redis_keys
from storage.errors import InvalidRequest, StorageError

CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 2.0
LOCAL_SWEEP_THRESHOLD = 10_000
_US = 1_000_000


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """At most `requests` requests per `per_s` seconds, bursts included."""

    requests: int
    per_s: float

    def __post_init__(self) -> None:
        if self.requests < 1 or not self.per_s > 0:
            raise InvalidRequest(
                f"a rate limit needs requests >= 1 and per_s > 0, not {self.requests} per "
                f"{self.per_s}s", {"requests": self.requests, "per_s": self.per_s})

    @property
    def interval_us(self) -> int:
        """How often one request's worth of budget comes back."""
        return max(1, math.ceil(self.per_s * _US / self.requests))

    @property
    def burst_us(self) -> int:
        """The period, rounded so that exactly `requests` intervals fit in it."""
        return self.interval_us * self.requests


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether one request may go ahead, and what is left of its budget. `reset_s`: seconds
    until the whole budget is back; `retry_after_s`: seconds until a refused request would be
    allowed (None when allowed)."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float | None = None

    def headers(self) -> dict[str, str]:
        """The `RateLimit-*` response headers, plus `Retry-After` when refused (whole seconds,
        rounded up, at least 1)."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s or 0.0)))
        return headers


def _decision(limit: RateLimit, allowed: bool, remaining: int, reset_us: int,
              retry_after_us: int) -> Decision:
    return Decision(allowed=allowed, limit=limit.requests, remaining=remaining,
                    reset_s=reset_us / _US,
                    retry_after_s=None if allowed else retry_after_us / _US)


def gcra_step(tat_us: int | None, now_us: int, limit: RateLimit) -> tuple[int | None, Decision]:
    """One GCRA step: the new arrival time to store (None when refused: keep the old one) and
    the decision. The Lua script below is this function, line for line."""
    tat = max(tat_us if tat_us is not None else now_us, now_us)
    new_tat = tat + limit.interval_us
    allow_at = new_tat - limit.burst_us
    if now_us < allow_at:
        return None, _decision(limit, False, 0, tat - now_us, allow_at - now_us)
    remaining = (limit.burst_us - (new_tat - now_us)) // limit.interval_us
    return new_tat, _decision(limit, True, remaining, new_tat - now_us, -1)


# KEYS[1]: the budget's key. ARGV: interval_us, burst_us, spend (1, or 0 to only ask).
# Returns {allowed (0/1), remaining, reset_us, retry_after_us (-1 when allowed)}.
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local spend = tonumber(ARGV[3] or '1')
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
local ttl = new_tat - now
if spend == 0 then
  return {1, math.floor((burst - ttl) / interval), ttl, -1}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(ttl / 1000))
return {1, math.floor((burst - ttl) / interval), ttl, -1}
"""


class RateLimiter(Protocol):
    """Decides whether `identity` (an API key id, a tenant) may make one more request in
    `scope` (for example "key" or "tenant"); each (scope, identity) has its own budget."""

    async def check(self, scope: str, identity: str, limit: RateLimit,
                    spend: bool = True) -> Decision: ...
    async def close(self) -> None: ...


class RedisRateLimiter:
    """GCRA budgets in Redis under `namespace`, shared by every replica using the same ones."""

    def __init__(self, url: str, namespace: str) -> None:
        redis_keys.namespace_prefix(namespace)  # reject a bad namespace now, not per request
        parts = urlsplit(url)
        self.address = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        self.namespace = namespace
        self._client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                      socket_timeout=COMMAND_TIMEOUT_S)
        self._script = self._client.register_script(GCRA_SCRIPT)  # EVALSHA, loads on NOSCRIPT

    async def check(self, scope: str, identity: str, limit: RateLimit,
                    spend: bool = True) -> Decision:
        """Spend one request of the budget if there is one (`spend=False`: only say whether
        there is). Raises `StorageError` when Redis cannot answer."""
        key = redis_keys.rate_limit_key(self.namespace, scope, identity)
        try:
            reply = await self._script(keys=[key], args=[limit.interval_us, limit.burst_us,
                                                         int(spend)])
        except (RedisError, OSError) as exc:
            raise StorageError(
                f"rate limiter could not reach Redis at {self.address}: {exc}",
                {"address": self.address, "scope": scope}) from exc
        allowed, remaining, reset_us, retry_after_us = (int(value) for value in reply)
        return _decision(limit, bool(allowed), remaining, reset_us, retry_after_us)

    async def close(self) -> None:
        await self._client.aclose()


class LocalRateLimiter:
    """The same GCRA budgets in process, for a single node without Redis. `clock` gives
    monotonic microseconds (injectable for tests). Memory stays bounded: budgets that have fully
    refilled are forgotten once more than `LOCAL_SWEEP_THRESHOLD` are held."""

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock or (lambda: time.monotonic_ns() // 1000)
        self._arrivals: dict[str, int] = {}

    async def check(self, scope: str, identity: str, limit: RateLimit,
                    spend: bool = True) -> Decision:
        """Spend one request of the budget if there is one (`spend=False`: only say whether
        there is)."""
        key = redis_keys.rate_limit_key("local", scope, identity)  # same names, same validation
        now = self._clock()
        if len(self._arrivals) > LOCAL_SWEEP_THRESHOLD:
            self._arrivals = {k: tat for k, tat in self._arrivals.items() if tat > now}
        new_tat, decision = gcra_step(self._arrivals.get(key), now, limit)
        if new_tat is not None and spend:
            self._arrivals[key] = new_tat
        return decision

    async def close(self) -> None:
        """Nothing to release; present so both limiters are closed the same way."""
