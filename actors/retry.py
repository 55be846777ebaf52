"""How long to wait before the next attempt of a task that failed in a retryable way."""

from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded in attempts and in delay.

    The delay before attempt n+1 is `base * 2**(n-1)`, capped at `max_delay_s`, then scaled by a
    random factor in [1 - jitter, 1] so that tasks failing together do not retry together.
    """

    max_attempts: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError("backoff delays cannot be negative")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def delay_after(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt number `attempt` (1-based) failed."""
        exponent = min(max(attempt - 1, 0), 62)
        delay = min(self.backoff_max_s, self.backoff_base_s * (2**exponent))
        factor = 1 - self.jitter * (rng or random).random()
        return delay * factor
