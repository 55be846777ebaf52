"""Retries and circuit breakers for calls to model deployments.

`RetryPolicy` decides whether a failed call is tried again on the same deployment and after how
long: only retryable errors (429, 5xx, timeouts), at most `attempts` tries, waiting a random
time between 0 and an exponentially growing, capped backoff ("full jitter"), and never less
than the provider's `Retry-After`. A provider that asks for more than `max_retry_after_s` is
not waited for: the caller moves on to its next deployment.

`CircuitBreaker` keeps one breaker per deployment:

    closed ──(failure_threshold failures within window_s)──▶ open
    open ──(cooldown_s passed; the next caller becomes the one probe)──▶ half_open
    half_open ──probe succeeds──▶ closed        half_open ──probe fails──▶ open (cool down again)

Guarantees:
- While half-open exactly one call is let through, however many callers ask at once, on one
  gateway or many (every change is a compare-and-set on the shared `BreakerStore`); the others
  are refused until the probe reports. A probe abandoned without an outcome (its call was
  cancelled) gives its slot back at once with `abandon`; one that never reports (its caller
  died) frees it after `probe_timeout_s`, which should exceed the longest call's timeout.
- The state lives in the `BreakerStore`, not in the breaker object: a new breaker over the same
  store (a restarted gateway, another replica) continues where the old one stopped. Stores:
  `InMemoryBreakerStore` (one process), `storage.llm_breakers.SqlBreakerStore` and
  `storage.llm_breakers.RedisBreakerStore`.
- A closed breaker costs one store read per call; nothing is written until a call fails.

The failure window is fixed: it starts at the first failure after the previous window ended.
Times are wall-clock epoch seconds, so replicas' clocks must roughly agree (within a fraction of
`cooldown_s`). Store failures (`StorageError`) reach the caller; the breaker does not guess.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from ml.llm.types import LlmError
from storage.errors import InvalidRequest
from storage.llm_breakers import CLOSED, HALF_OPEN, OPEN, BreakerRecord

__all__ = [
    "CLOSED", "HALF_OPEN", "OPEN", "Admission", "BreakerPolicy", "BreakerRecord",
    "BreakerStore", "CircuitBreaker", "InMemoryBreakerStore", "RetryPolicy",
]

# Compare-and-set rounds before giving up on one decision; only a storm of concurrent writers
# to one deployment's record gets near it.
MAX_ROUNDS = 50


def _require(condition: bool, message: str, **details: object) -> None:
    if not condition:
        raise InvalidRequest(message, dict(details))


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after how long, a failed call is tried again on the same deployment."""

    attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        _require(self.attempts >= 1, f"retry attempts must be at least 1, not {self.attempts}",
                 attempts=self.attempts)
        _require(0 <= self.base_delay_s <= self.max_delay_s,
                 f"retry delays need 0 <= base_delay_s <= max_delay_s, not {self.base_delay_s} "
                 f"and {self.max_delay_s}", base_delay_s=self.base_delay_s,
                 max_delay_s=self.max_delay_s)
        _require(self.max_retry_after_s >= 0,
                 f"max_retry_after_s must not be negative, not {self.max_retry_after_s}",
                 max_retry_after_s=self.max_retry_after_s)

    def delay_before_retry(self, attempt: int, error: LlmError,
                           uniform: Callable[[], float] = random.random) -> float | None:
        """Seconds to wait before trying again after try number `attempt` failed with `error`,
        or None when there is no further try on this deployment. `uniform` draws from [0, 1)."""
        if not error.retryable or attempt >= self.attempts:
            return None
        backoff = uniform() * min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        if error.retry_after_s is None:
            return backoff
        if error.retry_after_s > self.max_retry_after_s:
            return None
        return max(error.retry_after_s, backoff)


@dataclass(frozen=True)
class BreakerPolicy:
    """When a deployment's breaker opens, and how it recovers."""

    failure_threshold: int = 5
    window_s: float = 60.0
    cooldown_s: float = 30.0
    probe_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        _require(self.failure_threshold >= 1,
                 f"failure_threshold must be at least 1, not {self.failure_threshold}",
                 failure_threshold=self.failure_threshold)
        for name in ("window_s", "cooldown_s", "probe_timeout_s"):
            value = getattr(self, name)
            _require(value > 0, f"{name} must be positive, not {value}", **{name: value})


class BreakerStore(Protocol):
    """Shared state of the breakers; see `storage.llm_breakers` for the contract."""

    async def get(self, deployment: str) -> BreakerRecord | None: ...

    async def compare_and_set(self, deployment: str, expected_version: int,
                              record: BreakerRecord) -> bool: ...


class InMemoryBreakerStore:
    """Breaker records of one process (a single gateway, tests)."""

    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}

    async def get(self, deployment: str) -> BreakerRecord | None:
        return self._records.get(deployment)

    async def compare_and_set(self, deployment: str, expected_version: int,
                              record: BreakerRecord) -> bool:
        current = self._records.get(deployment)
        if (current.version if current else 0) != expected_version:
            return False
        self._records[deployment] = record
        return True


@dataclass(frozen=True)
class Admission:
    """The breaker's answer for one call: `allowed`, whether the call is the half-open `probe`,
    and `why` a refused call was refused."""

    deployment: str
    allowed: bool
    probe: bool = False
    why: str = ""


class CircuitBreaker:
    """The breakers of every deployment, over one store. Ask `admit` before each call, then
    report its outcome with `record_success` or `record_failure`."""

    def __init__(self, store: BreakerStore, policy: BreakerPolicy | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.policy = policy or BreakerPolicy()
        self._clock = clock

    async def record(self, deployment: str) -> BreakerRecord:
        """The deployment's breaker as stored (closed when it never failed)."""
        return await self.store.get(deployment) or BreakerRecord()

    async def admit(self, deployment: str) -> Admission:
        """Whether a call to `deployment` may go ahead now. When the cool-down of an open
        breaker is over, exactly one caller is admitted as the probe."""
        for _ in range(MAX_ROUNDS):
            now = self._clock()
            current = await self.record(deployment)
            if current.state == CLOSED:
                return Admission(deployment, allowed=True)
            if current.state == OPEN:
                reopens_at = (current.opened_at or 0.0) + self.policy.cooldown_s
                if now < reopens_at:
                    return Admission(deployment, allowed=False,
                                     why=f"circuit open for another {reopens_at - now:.1f} s")
            elif now < (current.probe_until or 0.0):
                return Admission(deployment, allowed=False,
                                 why="circuit half-open and its one probe call is in flight")
            probing = replace(current, state=HALF_OPEN,
                              probe_until=now + self.policy.probe_timeout_s,
                              version=current.version + 1)
            if await self.store.compare_and_set(deployment, current.version, probing):
                return Admission(deployment, allowed=True, probe=True)
        return Admission(deployment, allowed=False, why="circuit state kept changing under us")

    async def record_success(self, admission: Admission) -> None:
        """The admitted call succeeded (the deployment answered). A probe closes the breaker;
        a success of a closed breaker writes nothing."""
        if not admission.probe:
            return
        for _ in range(MAX_ROUNDS):
            current = await self.record(admission.deployment)
            if current.state != HALF_OPEN:
                return
            closed = BreakerRecord(state=CLOSED, window_started_at=self._clock(),
                                   version=current.version + 1)
            if await self.store.compare_and_set(admission.deployment, current.version, closed):
                return

    async def abandon(self, admission: Admission) -> None:
        """The admitted call ended without an outcome (it was cancelled). A probe gives its
        slot back: the breaker is open with its cool-down over, so the next caller probes."""
        if not admission.probe:
            return
        for _ in range(MAX_ROUNDS):
            current = await self.record(admission.deployment)
            if current.state != HALF_OPEN:
                return
            cooled = replace(current, state=OPEN, probe_until=None,
                             opened_at=self._clock() - self.policy.cooldown_s,
                             version=current.version + 1)
            if await self.store.compare_and_set(admission.deployment, current.version, cooled):
                return

    async def record_failure(self, admission: Admission) -> None:
        """The admitted call failed because of the deployment. A failed probe opens the breaker
        again; in a closed breaker the failure counts towards `failure_threshold`."""
        for _ in range(MAX_ROUNDS):
            now = self._clock()
            current = await self.record(admission.deployment)
            if current.state == OPEN or (current.state == HALF_OPEN and not admission.probe):
                return  # already open, or a late straggler while a probe decides
            if current.state == HALF_OPEN:
                changed = replace(current, state=OPEN, opened_at=now, probe_until=None)
            elif now - current.window_started_at >= self.policy.window_s:
                changed = replace(current, failures=1, window_started_at=now)
            else:
                changed = replace(current, failures=current.failures + 1)
            if changed.state == CLOSED and changed.failures >= self.policy.failure_threshold:
                changed = replace(changed, state=OPEN, opened_at=now)
            changed = replace(changed, version=current.version + 1)
            if await self.store.compare_and_set(admission.deployment, current.version, changed):
                return
