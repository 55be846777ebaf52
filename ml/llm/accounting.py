"""The gateway's side of the token budgets: reserve before a call, charge after it, cheaply.

`TokenAccounts` wraps one `storage.llm_budget.LlmBudgetStore` for one gateway process:

- `reserve(tenant, estimate)` sets the estimate aside for a tenant that has a budget (one
  atomic conditional UPDATE in the store, so concurrent calls from any number of gateways never
  together exceed the limit), or raises `BudgetExceeded` with the store's details (limit,
  used, reserved, estimate). A tenant without a budget is not reserved for (None): it is
  unlimited, and its usage is still recorded. Whether a tenant has a budget is read from the
  store at most every `LIMIT_FRESH_S` seconds; a budget set through this object counts at once,
  one set through another gateway within `LIMIT_FRESH_S` seconds (until then that tenant's
  calls here are recorded, not reserved).
- `apply_default(tenant)` gives a tenant with no budget the settings' default budget, once per
  process (an operator's budget is never overwritten).
- `charge(reservation, usage)` reconciles the reservation with the tokens really used, or
  records the usage of an unlimited tenant. The usage of a call made for a task is written
  before `charge` returns, so a task's outcome, committed after its answer, always finds its
  tokens and cost recorded. The usage of a call without a task is written **in the
  background**: the answer does not wait for it. Until it is written the reservation keeps
  the (larger or equal) estimate set aside, so deferring never lets a budget be overspent;
  `flush()` waits for every pending write (readers of usage call it first). At most
  `MAX_PENDING_WRITES` writes wait; beyond that `charge` writes before returning
  (back-pressure instead of unbounded memory). Writes that fail are logged; if the process
  dies first, its reservations expire after their TTL and those calls go unrecorded.
- `release(reservation)` gives a reservation back (the call failed before using tokens).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

from ml.llm.settings import LlmSettings
from ml.llm.types import BudgetExceeded
from storage.errors import StorageError
from storage.llm_budget import LlmBudgetStore, Reservation, TokenBudgetExceeded, UsageRecord

log = logging.getLogger("ymera.llm.gateway")

LIMIT_FRESH_S: Final = 5.0
MAX_PENDING_WRITES: Final = 1000


class TokenAccounts:
    """Budgets and usage of every tenant, over `store`. `clock` gives monotonic seconds."""

    def __init__(self, store: LlmBudgetStore, settings: LlmSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.settings = settings
        self._clock = clock
        self._limited: dict[str, tuple[float, bool]] = {}  # tenant -> (read at, has a budget)
        self._defaulted: set[str] = set()
        self._pending: set[asyncio.Task[None]] = set()

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
        self._limited[tenant] = (self._clock(), True)

    async def set_limit(self, tenant: str, limit_tokens: int | None, period: str) -> None:
        """An operator's budget for `tenant`, in force here at once."""
        await self.store.set_limit(tenant, limit_tokens, period)
        self._limited[tenant] = (self._clock(), limit_tokens is not None)

    async def _has_budget(self, tenant: str) -> bool:
        known = self._limited.get(tenant)
        if known is not None and self._clock() - known[0] < LIMIT_FRESH_S:
            return known[1]
        limited = (await self.store.status(tenant)).limit_tokens is not None
        self._limited[tenant] = (self._clock(), limited)
        return limited

    async def reserve(self, tenant: str, estimate: int) -> Reservation | None:
        """`estimate` tokens set aside for one call of `tenant` (None: it has no budget);
        `BudgetExceeded` when its budget cannot cover them."""
        await self.apply_default(tenant)
        if not await self._has_budget(tenant):
            return None
        try:
            return await self.store.reserve(tenant, estimate)
        except TokenBudgetExceeded as exc:
            refused = BudgetExceeded(exc.message)
            refused.details = dict(exc.details)
            raise refused from None

    async def release(self, reservation: Reservation | None) -> None:
        if reservation is None:
            return
        try:
            await asyncio.shield(self.store.release(reservation))
        except StorageError as exc:
            log.error("reserved tokens not given back (they expire with the reservation): %s",
                      exc)

    async def charge(self, reservation: Reservation | None, usage: UsageRecord) -> None:
        """Count `usage` (see the module's docstring): now for a task's call or when too many
        writes are waiting, else in the background."""
        write = (self.store.record(usage) if reservation is None
                 else self.store.reconcile(reservation, usage))
        if usage.task_id is not None or len(self._pending) >= MAX_PENDING_WRITES:
            await self._written(write, usage.tenant)
            return
        task = asyncio.get_running_loop().create_task(self._written(write, usage.tenant))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @staticmethod
    async def _written(write: Coroutine[Any, Any, None], tenant: str) -> None:
        try:
            await write
        except StorageError as exc:
            log.error("usage of a model call of tenant %s not recorded: %s", tenant, exc)

    async def flush(self) -> None:
        """Wait until every usage charged so far is written."""
        while self._pending:
            await asyncio.gather(*list(self._pending))
