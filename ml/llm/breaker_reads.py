"""A `BreakerStore` that remembers what it read for a moment, so that a healthy deployment's
breaker costs no store read on most calls.

`RecentBreakerReads(store, fresh_s)` answers `get` from what it last read or wrote for that
deployment when that is under `fresh_s` seconds old, else from `store`; every
`compare_and_set` goes to `store`, and a successful one is remembered (a failed one forgets the
deployment, so the next `get` reads the store's newer record). Guarantees:

- Changes made through this object are seen at once by its own process, so one gateway sees
  its own breakers exactly as the store has them.
- Changes made by another gateway are seen at most `fresh_s` seconds late: until then this
  one may send a few more calls to a deployment another replica just found down. Breaker
  transitions stay exact: they are compare-and-sets on the store's version, and a stale
  version only makes one fail and be retried on the store's record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from ml.llm.resilience import BreakerRecord, BreakerStore

DEFAULT_FRESH_S: Final = 0.5


class RecentBreakerReads:
    """`store`, with its reads remembered for `fresh_s` seconds (`clock`: monotonic)."""

    def __init__(self, store: BreakerStore, fresh_s: float = DEFAULT_FRESH_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.fresh_s = fresh_s
        self._clock = clock
        self._read: dict[str, tuple[float, BreakerRecord | None]] = {}

    async def get(self, deployment: str) -> BreakerRecord | None:
        remembered = self._read.get(deployment)
        now = self._clock()
        if remembered is not None and now - remembered[0] < self.fresh_s:
            return remembered[1]
        record = await self.store.get(deployment)
        self._read[deployment] = (now, record)
        return record

    async def compare_and_set(self, deployment: str, expected_version: int,
                              record: BreakerRecord) -> bool:
        stored = await self.store.compare_and_set(deployment, expected_version, record)
        if stored:
            self._read[deployment] = (self._clock(), record)
        else:
            self._read.pop(deployment, None)
        return stored
