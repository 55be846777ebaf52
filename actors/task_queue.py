"""Tasks waiting for a replica: per agent type, highest priority first, then oldest first.

Tasks waiting out a retry backoff sit in a delay heap until their time comes. Removal (cancel)
is lazy: a removed task is skipped when it reaches the front.
"""

from __future__ import annotations

import heapq
import itertools
import time


class TaskQueue:
    """Ready and delayed task ids for one agent type."""

    def __init__(self) -> None:
        self._ready: list[tuple[int, int, str]] = []
        self._delayed: list[tuple[float, int, int, str]] = []
        self._members: set[str] = set()
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._members

    def push(self, task_id: str, priority: int = 0, not_before: float | None = None) -> None:
        """Queue `task_id`; with `not_before` (a `time.monotonic()` value) it waits until then."""
        if task_id in self._members:
            return
        self._members.add(task_id)
        order = next(self._sequence)
        if not_before is not None and not_before > time.monotonic():
            heapq.heappush(self._delayed, (not_before, -priority, order, task_id))
        else:
            heapq.heappush(self._ready, (-priority, order, task_id))

    def remove(self, task_id: str) -> bool:
        if task_id in self._members:
            self._members.discard(task_id)
            return True
        return False

    def pop(self) -> str | None:
        """The next task that may run now, or None."""
        self._promote_due()
        while self._ready:
            _, _, task_id = heapq.heappop(self._ready)
            if task_id in self._members:
                self._members.discard(task_id)
                return task_id
        return None

    def next_due(self) -> float | None:
        """When the earliest delayed task becomes ready (`time.monotonic()`), if any."""
        while self._delayed and self._delayed[0][3] not in self._members:
            heapq.heappop(self._delayed)
        return self._delayed[0][0] if self._delayed else None

    def _promote_due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, priority, order, task_id = heapq.heappop(self._delayed)
            heapq.heappush(self._ready, (priority, order, task_id))
