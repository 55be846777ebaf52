"""Per-account login throttling: each failed password makes the account's next login wait.

An account is a (tenant, username) pair as typed, whether or not such a user exists, so the
throttle answers alike for both and reveals nothing. After `free_failures` failed logins in a
row, each login attempt first waits: `base_delay_s` after the first throttled failure, twice as
long after each further one, never more than `max_delay_s` (15 minutes by default), so a
stranger guessing a victim's password can delay the victim's login by at most that, while
the guesses themselves slow to about four an hour. A successful login clears the account;
failures are forgotten `forget_after_s` after the last.

Guarantees:
- `attempt` is one atomic step: either the account must still wait (the seconds are returned
  and nothing changes) or the attempt is counted as a failure in advance and allowed, so
  concurrent guesses cannot pass the throttle together; `succeeded` clears the account;
- `RedisLoginThrottle` keeps the state in Redis, timed by the server's clock, shared by every
  API replica (key: `redis_keys.rate_limit_key(namespace, "login_account", ...)`);
  `LocalLoginThrottle` keeps it in process, for at most `max_accounts` accounts (the
  least recently failed are forgotten first);
- when Redis fails, `StorageError` (the login fails closed, like the rate limits).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Final, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from serve_apps.rate_limit import COMMAND_TIMEOUT_S, CONNECT_TIMEOUT_S
from storage import redis_keys
from storage.errors import StorageError

SCOPE: Final = "login_account"
MAX_LOCAL_ACCOUNTS: Final = 100_000


@dataclasses.dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 900.0
    forget_after_s: float = 86_400.0

    def delay_s(self, failures: int) -> float:
        """How long the account waits after `failures` failures in a row."""
        if failures < self.free_failures:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** min(failures - self.free_failures,
                                                                    64))


@dataclasses.dataclass(frozen=True)
class Attempt:
    """`wait_s` > 0: refused, try again then. Else allowed, and `failures` is the count should
    it fail, which then makes the account wait `delay_s`."""

    wait_s: float
    failures: int = 0
    delay_s: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.wait_s <= 0


class LoginThrottle(Protocol):
    policy: ThrottlePolicy

    async def attempt(self, tenant: str, username: str) -> Attempt: ...
    async def succeeded(self, tenant: str, username: str) -> None: ...
    async def close(self) -> None: ...


def account_key(tenant: str, username: str) -> str:
    return json.dumps([tenant, username], separators=(",", ":"))


# KEYS[1]: the account's hash. ARGV: free_failures, base_delay_us, max_delay_us, forget_ms.
# Returns {wait_us (0 when allowed), failures, delay_us}.
ATTEMPT_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local wait_until = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if wait_until > now then
  return {wait_until - now, 0, 0}
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local free = tonumber(ARGV[1])
local delay = 0
if failures >= free then
  delay = tonumber(ARGV[2]) * 2 ^ math.min(failures - free, 64)
  if delay > tonumber(ARGV[3]) then delay = tonumber(ARGV[3]) end
end
redis.call('HSET', KEYS[1], 'until', string.format('%.0f', now + delay))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {0, failures, string.format('%.0f', delay)}
"""


class RedisLoginThrottle:
    def __init__(self, url: str, namespace: str, policy: ThrottlePolicy) -> None:
        redis_keys.namespace_prefix(namespace)
        self.namespace = namespace
        self.policy = policy
        self._client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                      socket_timeout=COMMAND_TIMEOUT_S)
        self._script = self._client.register_script(ATTEMPT_SCRIPT)

    def _key(self, tenant: str, username: str) -> str:
        return redis_keys.rate_limit_key(self.namespace, SCOPE, account_key(tenant, username))

    async def attempt(self, tenant: str, username: str) -> Attempt:
        policy = self.policy
        try:
            wait_us, failures, delay_us = await self._script(
                keys=[self._key(tenant, username)],
                args=[policy.free_failures, int(policy.base_delay_s * 1e6),
                      int(policy.max_delay_s * 1e6), int(policy.forget_after_s * 1000)])
        except (RedisError, OSError) as exc:
            raise StorageError(f"login throttle could not reach Redis: {exc}") from exc
        return Attempt(int(wait_us) / 1e6, int(failures), int(delay_us) / 1e6)

    async def succeeded(self, tenant: str, username: str) -> None:
        try:
            await self._client.delete(self._key(tenant, username))
        except (RedisError, OSError) as exc:
            raise StorageError(f"login throttle could not reach Redis: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()


class LocalLoginThrottle:
    """The same in process; `clock` gives monotonic seconds (injectable for tests)."""

    def __init__(self, policy: ThrottlePolicy, max_accounts: int = MAX_LOCAL_ACCOUNTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.max_accounts = max_accounts
        self._clock = clock
        # account → (failures, wait until, last failure), least recently failed first
        self._accounts: collections.OrderedDict[str, tuple[int, float, float]] = (
            collections.OrderedDict())

    async def attempt(self, tenant: str, username: str) -> Attempt:
        key, now = account_key(tenant, username), self._clock()
        failures, wait_until, last = self._accounts.get(key, (0, 0.0, now))
        if now - last > self.policy.forget_after_s:
            failures, wait_until = 0, 0.0
        if wait_until > now:
            return Attempt(wait_until - now)
        failures += 1
        delay = self.policy.delay_s(failures)
        self._accounts.pop(key, None)
        self._accounts[key] = (failures, now + delay, now)
        while len(self._accounts) > self.max_accounts:
            self._accounts.popitem(last=False)
        return Attempt(0.0, failures, delay)

    async def succeeded(self, tenant: str, username: str) -> None:
        self._accounts.pop(account_key(tenant, username), None)

    async def close(self) -> None:
        """Nothing to release."""
