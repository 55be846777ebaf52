"""Group commit of the gateway's budget writes: many settlements, one transaction.

`UsageWriter.submit(settlement, durable)` queues one `storage.llm_budget.Settlement` (a call's
usage, a reconciled reservation, or tokens given back) and returns a future that resolves once
it is committed. One flush at a time takes everything queued, in order, and commits it with
`LlmBudgetStore.settle` in one transaction, so N concurrent calls cost one commit, not N.

Guarantees:
- **Acknowledged means committed**: a future resolves only after the transaction holding its
  settlement committed. A failed transaction stored none of its settlements (it is atomic);
  they stay queued, in order, and are retried with backoff until the database takes them,
  their futures still pending. Nothing is dropped on a failure.
- **A crash of the flush loop loses nothing queued**: the loop is a task that runs while there
  is work; if it ends for any reason, the next `submit` or `drain` starts it again over the
  same queue. (A crash of the *process* loses what was queued and not acknowledged: callers
  that need durability wait for their future.)
- **Durable work is not held back**: a durable settlement is flushed at once (with whatever
  is queued); background work alone waits up to `BATCH_WINDOW_S` to be joined by more.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from storage.errors import StorageError
from storage.llm_budget import LlmBudgetStore, Settlement

log = logging.getLogger("ymera.llm.gateway")

BATCH_WINDOW_S: Final = 0.02
MAX_BATCH: Final = 500
RETRY_DELAYS_S: Final = (0.05, 0.2, 1.0, 2.0, 5.0)


class UsageWriter:
    """Settlements of one gateway process, committed in batches to `store`."""

    def __init__(self, store: LlmBudgetStore, window_s: float = BATCH_WINDOW_S) -> None:
        self.store = store
        self.window_s = window_s
        self.flushes = 0
        self._queued: list[tuple[Settlement, asyncio.Future[None]]] = []
        self._urgent: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        return len(self._queued)

    def submit(self, settlement: Settlement, durable: bool = False) -> asyncio.Future[None]:
        """Queue `settlement`; the future resolves once it is committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((settlement, future))
        self._kick(durable)
        return future

    async def drain(self) -> None:
        """Wait until everything queued so far is committed."""
        while self._queued:
            pending = [future for _, future in self._queued]
            self._kick(urgent=True)
            await asyncio.gather(*(asyncio.shield(f) for f in pending),
                                 return_exceptions=True)

    def _kick(self, urgent: bool) -> None:
        if self._urgent is None:
            self._urgent = asyncio.Event()
        if urgent:
            self._urgent.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="llm-usage-writer")
            self._task.add_done_callback(self._ended)

    @staticmethod
    def _ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the usage writer stopped (%s); the next write restarts it",
                      task.exception())

    async def _run(self) -> None:
        urgent = self._urgent
        assert urgent is not None
        failures = 0
        while self._queued:
            if not urgent.is_set():  # background work only: give it a moment to gather
                try:
                    await asyncio.wait_for(urgent.wait(), self.window_s)
                except TimeoutError:
                    pass
            urgent.clear()
            taken = self._queued[:MAX_BATCH]
            try:
                await self.store.settle([settlement for settlement, _ in taken])
            except StorageError as exc:
                failures += 1
                delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S)) - 1]
                log.error("token usage not written yet (%s); retrying in %.2f s", exc, delay)
                urgent.set()
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.flushes += 1
            del self._queued[:len(taken)]
            for _, future in taken:
                if not future.done():
                    future.set_result(None)
