"""The gateway's side of the token budgets: reserve before a call, charge after it, cheaply.

`TokenAccounts` wraps one `storage.llm_budget.LlmBudgetStore` for one gateway process:

- `reserve(tenant, estimate)` sets the estimate aside for a tenant that has a budget, or raises
  `BudgetExceeded` with the store's details (limit, used, reserved, estimate). A tenant without
  a budget is not reserved for (None): it is unlimited, and its usage is still recorded.
  Whether a tenant has a budget is read from the store at most every `LIMIT_FRESH_S` seconds;
  a budget set through this object counts at once, one set through another gateway within
  `LIMIT_FRESH_S` seconds (until then that tenant's calls here are recorded, not reserved).
- **Leased budget**: the estimate is taken, in memory and without an await, from a block of
  the tenant's tokens this process leased from the store (`LlmBudgetStore.lease`: one
  conditional UPDATE). A block is `max(estimate, min(LEASE_CALLS * estimate, LEASE_SHARE *
  remaining))` tokens, so the blocks of all gateways together never exceed `limit - used`
  (**a burst never overspends, on any number of gateways**), and a tenant near its limit gets
  blocks of one estimate. When a block cannot cover a call, the next is leased in the same
  transaction that gives the old block's unused tokens back (one lease per tenant at a time,
  under a per-tenant lock). A block serves new calls for at most `LEASE_S` seconds; then (or
  on `flush`, or when its budget is set here) its unused tokens are given back, so another
  gateway can be refused while tokens sit unused in this one's block for at most `LEASE_S`
  seconds. The block's row in the store expires after `DEFAULT_RESERVATION_TTL_S + LEASE_S`:
  if this process dies, its blocks come back then. A budget lowered through another gateway
  applies here to new blocks: tokens already leased may still be spent (at most one block).
  A block taken in one period serves calls for up to `LEASE_S` seconds into the next.
- `charge(reservation, usage)` reconciles the reservation with the tokens really used, or
  records the usage of an unlimited tenant, through a `UsageWriter` (group commit: the
  writes pending in this process share one transaction). **The usage of a call made for a
  task is committed before `charge` returns**, so a task's outcome, committed after its
  answer, always finds its tokens and cost recorded; if the database does not take it within
  `DURABLE_WAIT_S`, `charge` logs it and returns (the write stays queued and is retried).
  The usage of a call without a task is written in the background: until it is written the
  reservation keeps the (larger or equal) estimate set aside, so deferring never lets a budget
  be overspent; `flush()` gives back the unused blocks and waits for every pending write
  (readers of usage call it first). At most `MAX_PENDING_WRITES` writes wait; beyond that
  `charge` waits for its write (back-pressure instead of unbounded memory). If the process
  dies first, its reservations expire after their TTL and those calls go unrecorded.
- `release(reservation)` gives a reservation back (the call failed before using tokens): to
  its block in memory while the block serves calls, else to the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ml.llm.settings import LlmSettings
from ml.llm.types import BudgetExceeded
from ml.llm.usage_writer import UsageWriter
from storage.llm_budget import (
    DEFAULT_RESERVATION_TTL_S, LlmBudgetStore, Reservation, Settlement, TokenBudgetExceeded,
    UsageRecord,
)

log = logging.getLogger("ymera.llm.gateway")

LIMIT_FRESH_S: Final = 5.0
MAX_PENDING_WRITES: Final = 1000
DURABLE_WAIT_S: Final = 10.0
LEASE_S: Final = 5.0
LEASE_CALLS: Final = 50
LEASE_SHARE: Final = 0.25


@dataclass
class _Lease:
    """A block of a tenant's tokens leased by this process; `free` is still unpromised."""

    block: Reservation
    free: int
    until: float

    def piece(self, tokens: int) -> Reservation:
        self.free -= tokens
        block = self.block
        return Reservation(block.id, block.tenant, block.period_key, tokens, block.expires_at)


class TokenAccounts:
    """Budgets and usage of every tenant, over `store`. `clock` gives monotonic seconds."""

    def __init__(self, store: LlmBudgetStore, settings: LlmSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.settings = settings
        self.writer = UsageWriter(store)
        self._clock = clock
        # tenant -> (read at, has a budget, its period)
        self._limited: dict[str, tuple[float, bool, str | None]] = {}
        self._defaulted: set[str] = set()
        self._leases: dict[str, _Lease] = {}
        self._leasing: dict[str, asyncio.Lock] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    async def apply_default(self, tenant: str) -> None:
        """Give `tenant` the default budget unless it has one (asked once per process)."""
        default = self.settings.default_budget_tokens
        if default is None or tenant in self._defaulted:
            return
        if (await self.store.status(tenant)).limit_tokens is None:
            await self.store.set_limit(tenant, default, self.settings.budget_period)
            log.info("tenant %s given the default model budget of %d tokens per %s", tenant,
                     default, self.settings.budget_period)
        self._defaulted.add(tenant)
        self._limited[tenant] = (self._clock(), True, None)

    async def set_limit(self, tenant: str, limit_tokens: int | None, period: str) -> None:
        """An operator's budget for `tenant`, in force here at once."""
        self._give_back(tenant)
        await self.store.set_limit(tenant, limit_tokens, period)
        self._limited[tenant] = (self._clock(), limit_tokens is not None, period)

    async def _has_budget(self, tenant: str) -> bool:
        known = self._limited.get(tenant)
        if known is not None and self._clock() - known[0] < LIMIT_FRESH_S:
            return known[1]
        status = await self.store.status(tenant)
        self._limited[tenant] = (self._clock(), status.limit_tokens is not None, status.period)
        return status.limit_tokens is not None

    async def reserve(self, tenant: str, estimate: int) -> Reservation | None:
        """`estimate` tokens set aside for one call of `tenant` (None: it has no budget);
        `BudgetExceeded` when its budget cannot cover them."""
        if tenant not in self._defaulted:
            await self.apply_default(tenant)
        if not await self._has_budget(tenant):
            return None
        piece = self._from_lease(tenant, estimate)
        if piece is not None:
            return piece
        lock = self._leasing.setdefault(tenant, asyncio.Lock())
        async with lock:
            piece = self._from_lease(tenant, estimate)  # leased while this call waited
            if piece is not None:
                return piece
            return await self._lease(tenant, estimate)

    def _from_lease(self, tenant: str, estimate: int) -> Reservation | None:
        lease = self._leases.get(tenant)
        if lease is None or lease.free < estimate or self._clock() >= lease.until:
            return None
        return lease.piece(estimate)

    async def _lease(self, tenant: str, estimate: int) -> Reservation:
        old = self._leases.pop(tenant, None)
        retiring = None
        if old is not None and old.free > 0:
            retiring = old.piece(old.free)
        try:
            block = await self.store.lease(tenant, estimate, LEASE_CALLS * estimate,
                                           LEASE_SHARE, retiring,
                                           DEFAULT_RESERVATION_TTL_S + LEASE_S)
        except TokenBudgetExceeded as exc:  # the old block was given back all the same
            refused = BudgetExceeded(exc.message)
            refused.details = dict(exc.details)
            raise refused from None
        except BaseException:
            if retiring is not None:  # not given back: it is still the old block's
                self._settle_later(Settlement(retiring))
            raise
        lease = _Lease(block, block.tokens, self._clock() + LEASE_S)
        self._leases[tenant] = lease
        previous = self._timers.pop(tenant, None)
        if previous is not None:
            previous.cancel()
        self._timers[tenant] = asyncio.get_running_loop().call_later(
            LEASE_S, self._expire, tenant, lease)
        return lease.piece(estimate)

    def _expire(self, tenant: str, lease: _Lease) -> None:
        self._timers.pop(tenant, None)
        if self._leases.get(tenant) is lease and self._clock() >= lease.until:
            self._give_back(tenant)

    def expire_leases(self) -> int:
        """Give back the unused tokens of every block past its `LEASE_S`; how many blocks."""
        due = [tenant for tenant, lease in self._leases.items()
               if self._clock() >= lease.until]
        for tenant in due:
            self._give_back(tenant)
        return len(due)

    def _give_back(self, tenant: str) -> None:
        lease = self._leases.pop(tenant, None)
        if lease is not None and lease.free > 0:
            self._settle_later(Settlement(lease.piece(lease.free)))

    def _settle_later(self, settlement: Settlement) -> None:
        self.writer.submit(settlement).add_done_callback(_ignore)

    async def release(self, reservation: Reservation | None) -> None:
        if reservation is None:
            return
        lease = self._leases.get(reservation.tenant)
        if lease is not None and lease.block.id == reservation.id:
            lease.free += reservation.tokens  # back to the block that still serves calls
            return
        self._settle_later(Settlement(reservation))

    async def charge(self, reservation: Reservation | None, usage: UsageRecord) -> None:
        """Count `usage` (see the module's docstring): committed before returning for a
        task's call or when too many writes are waiting, else in the background."""
        durable = usage.task_id is not None or self.writer.backlog >= MAX_PENDING_WRITES
        known = self._limited.get(usage.tenant)
        period = known[2] if reservation is None and known is not None else None
        written = self.writer.submit(Settlement(reservation, usage, period), durable)
        if not durable:
            written.add_done_callback(_ignore)
            return
        try:
            await asyncio.wait_for(asyncio.shield(written), DURABLE_WAIT_S)
        except TimeoutError:
            log.error("usage of a model call of tenant %s not recorded within %.0f s; still "
                      "trying", usage.tenant, DURABLE_WAIT_S)

    async def flush(self) -> None:
        """Give back every block's unused tokens and wait until every usage charged so far
        is written."""
        for tenant in list(self._leases):
            self._give_back(tenant)
        await self.writer.drain()

    async def close(self) -> None:
        """`flush`, and stop the lease timers."""
        await self.flush()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


def _ignore(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a failure was logged by the writer
