"""Per-deployment rate limits (requests and tokens per minute), kept by each gateway process.

`RateLimiter` holds one sliding window of the last 60 seconds per deployment that has `rpm` or
`tpm` configured; a deployment without limits is never held back. A call takes a `Grant` (its
request, and its estimated tokens) before it is sent; `settle` replaces the estimate by the
tokens really used once they are known, `release` gives a grant back when the call was never
sent. A grant that would take a window past either limit is refused, except that a call
estimated above the whole `tpm` is let through alone in an empty window (it would otherwise
never run; the provider decides).

`LimitedBreaker` is how the gateway applies the limits: a `CircuitBreaker` for one request
that admits a deployment only when its breaker *and* its window let the call through. A
deployment at its limit is therefore skipped exactly like one whose breaker is open: the
request fails over to the next deployment of its group, and no breaker counts a failure.
When every deployment is at its limit, the gateway waits for the soonest window to make room
if that is within `MAX_WAIT_S`, else refuses at once with `RateLimited` and how long to wait.

Guarantees: taking a grant is synchronous (no `await` between the check and the taking), so
concurrent requests of one event loop never together exceed a limit. The windows are
per process: N gateway replicas may together send up to N times a deployment's limit (the
provider's own 429s, with `Retry-After`, are the shared backstop).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from ml.llm.config import Deployment
from ml.llm.resilience import Admission, BreakerRecord, CircuitBreaker

WINDOW_S = 60.0
MAX_WAIT_S = 2.0
"""The longest a request waits for room when every deployment of its group is at its limit."""


@dataclass
class Grant:
    """One call's place in a deployment's window: when it was sent and its tokens."""

    deployment: str
    at: float
    tokens: int


class _Window:
    """The grants of one deployment in the last `WINDOW_S` seconds."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.grants: deque[Grant] = deque()
        self.tokens = 0

    def trim(self, now: float) -> None:
        while self.grants and self.grants[0].at <= now - WINDOW_S:
            self.tokens -= self.grants.popleft().tokens

    def wait_s(self, now: float, tokens: int) -> float:
        """Seconds until a call of `tokens` fits (0: now)."""
        self.trim(now)
        waits = [0.0]
        if self.rpm is not None and len(self.grants) >= self.rpm:
            waits.append(self.grants[len(self.grants) - self.rpm].at + WINDOW_S - now)
        if self.tpm is not None:
            # tokens the oldest grants must take with them (all of them for an oversize call)
            excess = self.tokens - (self.tpm - tokens if tokens <= self.tpm else 0)
            shed = 0
            for grant in self.grants if excess > 0 else ():
                shed += grant.tokens
                if shed >= excess:
                    waits.append(grant.at + WINDOW_S - now)
                    break
        return max(waits)


class RateLimiter:
    """The windows of the deployments that have limits. `clock` gives monotonic seconds."""

    def __init__(self, deployments: Iterable[Deployment],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows = {d.name: _Window(d.rpm, d.tpm) for d in deployments
                         if d.rpm is not None or d.tpm is not None}
        self._limits = {name: _describe(w) for name, w in self._windows.items()}

    def limits(self, deployment: str) -> str:
        """The deployment's limits in words ("" when it has none)."""
        return self._limits.get(deployment, "")

    def wait_s(self, deployment: str, tokens: int) -> float:
        """Seconds until `deployment` has room for a call of `tokens` (0: now)."""
        window = self._windows.get(deployment)
        return 0.0 if window is None else window.wait_s(self._clock(), tokens)

    def try_acquire(self, deployment: str, tokens: int) -> Grant | None:
        """A grant for a call of `tokens` to `deployment` now, or None when it has no room."""
        now = self._clock()
        grant = Grant(deployment, now, max(0, tokens))
        window = self._windows.get(deployment)
        if window is None:
            return grant
        if window.wait_s(now, grant.tokens) > 0:
            return None
        window.grants.append(grant)
        window.tokens += grant.tokens
        return grant

    def settle(self, grant: Grant, tokens: int) -> None:
        """The call of `grant` used `tokens` (instead of its estimate)."""
        window = self._windows.get(grant.deployment)
        tokens = max(0, tokens)
        if window is not None and grant in window.grants:
            window.tokens += tokens - grant.tokens
        grant.tokens = tokens

    def release(self, grant: Grant) -> None:
        """The call of `grant` was never sent: it takes no place in the window."""
        window = self._windows.get(grant.deployment)
        if window is not None and grant in window.grants:
            window.grants.remove(grant)
            window.tokens -= grant.tokens


def _describe(window: _Window) -> str:
    parts = []
    if window.rpm is not None:
        parts.append(f"{window.rpm} requests")
    if window.tpm is not None:
        parts.append(f"{window.tpm} tokens")
    return " and ".join(parts) + " per minute"


BreakerChanged = Callable[[str, BreakerRecord], Awaitable[None]]


class LimitedBreaker(CircuitBreaker):
    """The breakers of `breaker`'s store, for one request of an estimated `tokens`, that also
    refuse a deployment with no room in its rate-limit window. `grants` holds, by deployment,
    the grant of the last call admitted; `on_change` hears of each breaker that may have
    changed state (after a failure, a probe's outcome or an abandoned probe)."""

    def __init__(self, breaker: CircuitBreaker, limiter: RateLimiter, tokens: int,
                 on_change: BreakerChanged | None = None) -> None:
        super().__init__(breaker.store, breaker.policy)
        self._breaker = breaker
        self._limiter = limiter
        self._tokens = tokens
        self._on_change = on_change
        self.grants: dict[str, Grant] = {}

    async def record(self, deployment: str) -> BreakerRecord:
        return await self._breaker.record(deployment)

    async def admit(self, deployment: str) -> Admission:
        grant = self._limiter.try_acquire(deployment, self._tokens)
        if grant is None:
            return Admission(deployment, allowed=False,
                             why=f"at its rate limit ({self._limiter.limits(deployment)})")
        try:
            admission = await self._breaker.admit(deployment)
        except BaseException:
            self._limiter.release(grant)
            raise
        if not admission.allowed:
            self._limiter.release(grant)
            return admission
        self.grants[deployment] = grant
        return admission

    async def record_success(self, admission: Admission) -> None:
        await self._breaker.record_success(admission)
        if admission.probe:
            await self._changed(admission.deployment)

    async def record_failure(self, admission: Admission) -> None:
        await self._breaker.record_failure(admission)
        await self._changed(admission.deployment)

    async def abandon(self, admission: Admission) -> None:
        # the cancelled call was probably sent: its grant keeps its place in the window
        await self._breaker.abandon(admission)
        if admission.probe:
            await self._changed(admission.deployment)

    async def _changed(self, deployment: str) -> None:
        if self._on_change is not None:
            await self._on_change(deployment, await self._breaker.record(deployment))
