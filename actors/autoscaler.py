"""When an agent pool grows or shrinks.

A pool's backlog is its tasks queued plus its attempts running. The pool wants enough
replicas that each carries at most `target_backlog` of it, within its `min_replicas` and
`max_replicas`. A change of size waits until the wish has held for a delay, so that one burst
does not start replicas that will sit idle and one lull does not stop replicas that are needed
a second later: growing waits `upscale_delay_s` (0 by default: a backlog is worth acting on at
once), shrinking waits `downscale_delay_s` (the idle period) and then goes only as low as the
highest wish seen during that period.

This module decides; `actors.pools.PoolManager` acts, and drains a replica before it stops.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

from actors.config import AutoscaleConfig


def wanted_replicas(backlog: int, target_backlog: int, min_replicas: int,
                    max_replicas: int) -> int:
    """How many replicas carry `backlog` at `target_backlog` each, within the bounds."""
    wanted = math.ceil(backlog / max(target_backlog, 1))
    return max(min_replicas, min(max_replicas, wanted))


@dataclasses.dataclass
class _Wish:
    grow: bool
    since: float
    peak: int  # the highest wish while it held (what a shrink may go down to)


class Autoscaler:
    """Remembers, per pool, since when it has wished to grow or to shrink."""

    def __init__(self, config: AutoscaleConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._wishes: dict[str, _Wish] = {}

    def decide(self, pool: str, desired: int, wanted: int) -> int | None:
        """The pool's new desired size, or None to keep `desired` for now."""
        if wanted == desired:
            self._wishes.pop(pool, None)
            return None
        now = self.clock()
        grow = wanted > desired
        wish = self._wishes.get(pool)
        if wish is None or wish.grow != grow:
            wish = self._wishes[pool] = _Wish(grow, now, wanted)
        wish.peak = max(wish.peak, wanted)
        delay = self.config.upscale_delay_s if grow else self.config.downscale_delay_s
        if now - wish.since < delay:
            return None
        del self._wishes[pool]
        return wanted if grow else wish.peak

    def forget(self, pool: str) -> None:
        """Drop a pool's pending wish (its bounds or size were just set by hand)."""
        self._wishes.pop(pool, None)
