"""Per-tenant token budgets for model calls, and the usage and cost of every call.

A tenant's budget is a limit of tokens per period ("month", "day" or "total", counted in UTC);
a tenant without one is unlimited but still counted. A call goes through three steps:

    reserve(tenant, estimate)          set the estimate aside, or refuse: TokenBudgetExceeded
    reconcile(reservation, usage)      replace the estimate by the tokens really used, and
                                       record the call's usage and cost (one transaction)
    release(reservation)               give the estimate back (the call was never made)

Guarantees:
- A reservation is one conditional UPDATE of the period's counters
  (`used + reserved + estimate <= limit`), so concurrent reservations, from any number of
  gateways, never together exceed the limit: each sees the counters the previous ones left.
  (PostgreSQL re-checks the condition on the row a concurrent writer committed; SQLite runs
  writers one at a time.)
- A reservation counts once: reconciling, releasing and expiring each first delete its row,
  and only the one that deleted it adjusts `reserved`. A reservation nobody reconciles or
  releases (its gateway died) expires after its `ttl_s`; expired reservations of a tenant are
  freed before each of its reservations, and `free_expired` frees every tenant's.
- Reconciling always counts the tokens really used, even when they exceed the estimate or the
  reservation expired first: spent tokens are never forgotten, so a period can end above its
  limit by at most the underestimates of the calls in flight.
- Every read and write is keyed by tenant.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import EngineStore
from storage.errors import Conflict, InvalidRequest
from storage.messages import utcnow
from storage.models import (
    llm_budget_periods_table, llm_budgets_table, llm_reservations_table, llm_usage_table,
)

PERIODS = ("month", "day", "total")
DEFAULT_PERIOD = "month"
DEFAULT_RESERVATION_TTL_S = 600.0


class TokenBudgetExceeded(Conflict):
    """The tenant's budget for this period cannot cover the estimate; `details` has the
    limit, the tokens used and reserved, and the estimate."""

    code = "token_budget_exceeded"


def period_key(period: str, at: datetime) -> str:
    """The counters a call at `at` goes to: "2026-12" (month), "2026-12-04" (day), "total"."""
    if period == "month":
        return at.strftime("%Y-%m")
    if period == "day":
        return at.strftime("%Y-%m-%d")
    if period == "total":
        return "total"
    raise InvalidRequest(f"budget period {period!r} is not one of {PERIODS}", {"period": period})


@dataclass(frozen=True)
class Reservation:
    """Tokens set aside for one call of `tenant`, in the period `period_key`."""

    id: str
    tenant: str
    period_key: str
    tokens: int
    expires_at: datetime


@dataclass(frozen=True)
class BudgetStatus:
    """A tenant's budget in the current period; `limit_tokens` None means unlimited."""

    tenant: str
    period: str
    period_key: str
    limit_tokens: int | None
    used_tokens: int
    reserved_tokens: int

    @property
    def remaining_tokens(self) -> int | None:
        if self.limit_tokens is None:
            return None
        return max(0, self.limit_tokens - self.used_tokens - self.reserved_tokens)


@dataclass(frozen=True)
class UsageRecord:
    """What one model call used: tokens in and out, and its cost (None when unpriced)."""

    tenant: str
    deployment: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: float | None = None
    task_id: str | None = None

    def __post_init__(self) -> None:
        _check_tenant(self.tenant)
        for name in ("input_tokens", "output_tokens"):
            value = getattr(self, name)
            if value < 0:
                raise InvalidRequest(f"{name} must not be negative, not {value}", {name: value})
        if self.cost is not None and self.cost < 0:
            raise InvalidRequest(f"cost must not be negative, not {self.cost}",
                                 {"cost": self.cost})

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class UsageTotals:
    """The sum of some calls' usage."""

    calls: int
    input_tokens: int
    output_tokens: int
    cost: float


def _check_tenant(tenant: str) -> str:
    if not tenant or len(tenant) > 64:
        raise InvalidRequest(f"tenant {tenant!r} must be 1 to 64 characters", {"tenant": tenant})
    return tenant


class LlmBudgetStore(EngineStore):
    """Token budgets, reservations and usage records. `clock` gives the current time (UTC)."""

    clock: Callable[[], datetime] = staticmethod(utcnow)

    async def set_limit(self, tenant: str, limit_tokens: int | None,
                        period: str = DEFAULT_PERIOD) -> None:
        """Limit `tenant` to `limit_tokens` per `period` from now on (the current period
        included); None removes the limit."""
        _check_tenant(tenant)
        now = self.clock()
        key = period_key(period, now)
        if limit_tokens is not None and limit_tokens < 0:
            raise InvalidRequest(f"a token limit must not be negative, not {limit_tokens}",
                                 {"limit_tokens": limit_tokens})
        budgets, periods = llm_budgets_table, llm_budget_periods_table
        async with self._transaction("setting a token budget") as connection:
            await connection.execute(delete(budgets).where(budgets.c.tenant == tenant))
            if limit_tokens is not None:
                await connection.execute(insert(budgets).values(
                    tenant=tenant, period=period, limit_tokens=limit_tokens, updated_at=now))
            await connection.execute(
                update(periods).where(periods.c.tenant == tenant, periods.c.period_key == key)
                .values(limit_tokens=limit_tokens, updated_at=now))

    async def _budget(self, tenant: str) -> tuple[str, int | None]:
        c = llm_budgets_table.c
        rows = await self._fetch(select(c.period, c.limit_tokens).where(c.tenant == tenant))
        return (rows[0].period, rows[0].limit_tokens) if rows else (DEFAULT_PERIOD, None)

    async def status(self, tenant: str) -> BudgetStatus:
        """The tenant's limit and counters in the current period."""
        period, limit = await self._budget(_check_tenant(tenant))
        key = period_key(period, self.clock())
        c = llm_budget_periods_table.c
        rows = await self._fetch(select(c.used_tokens, c.reserved_tokens).where(
            c.tenant == tenant, c.period_key == key))
        used, reserved = (rows[0].used_tokens, rows[0].reserved_tokens) if rows else (0, 0)
        return BudgetStatus(tenant, period, key, limit, used, reserved)

    async def reserve(self, tenant: str, estimate: int,
                      ttl_s: float = DEFAULT_RESERVATION_TTL_S) -> Reservation:
        """Set `estimate` tokens aside for one call, until reconciled, released or `ttl_s`
        passes. Raises `TokenBudgetExceeded` when the period's budget cannot cover it."""
        _check_tenant(tenant)
        if estimate < 1:
            raise InvalidRequest(f"a token estimate must be at least 1, not {estimate}",
                                 {"estimate": estimate})
        if not ttl_s > 0:
            raise InvalidRequest(f"a reservation's ttl_s must be positive, not {ttl_s}",
                                 {"ttl_s": ttl_s})
        period, limit = await self._budget(tenant)
        now = self.clock()
        reservation = Reservation(uuid.uuid4().hex, tenant, period_key(period, now), estimate,
                                  now + timedelta(seconds=ttl_s))
        periods = llm_budget_periods_table
        async with self._transaction("reserving tokens") as connection:
            await self._free_expired(connection, now, tenant)
            await connection.execute(self._new_period().values(
                tenant=tenant, period_key=reservation.period_key, limit_tokens=limit,
                used_tokens=0, reserved_tokens=0, updated_at=now))
            c = periods.c
            granted = (await connection.execute(
                update(periods)
                .where(c.tenant == tenant, c.period_key == reservation.period_key,
                       or_(c.limit_tokens.is_(None),
                           c.used_tokens + c.reserved_tokens + estimate <= c.limit_tokens))
                .values(reserved_tokens=c.reserved_tokens + estimate, updated_at=now)
            )).rowcount == 1
            if granted:
                await connection.execute(insert(llm_reservations_table).values(
                    id=reservation.id, tenant=tenant, period_key=reservation.period_key,
                    tokens=estimate, created_at=now, expires_at=reservation.expires_at))
        if granted:
            return reservation
        status = await self.status(tenant)
        raise TokenBudgetExceeded(
            f"tenant {tenant!r} has {status.remaining_tokens} of its {status.limit_tokens} "
            f"tokens left this {status.period}, not the {estimate} this call may need",
            {"tenant": tenant, "period": status.period_key, "limit_tokens": status.limit_tokens,
             "used_tokens": status.used_tokens, "reserved_tokens": status.reserved_tokens,
             "estimate": estimate})

    def _new_period(self) -> Any:
        """An insert of a period's counters that leaves existing counters as they are."""
        if self.engine.dialect.name == "postgresql":
            return postgresql_insert(llm_budget_periods_table).on_conflict_do_nothing()
        return sqlite_insert(llm_budget_periods_table).on_conflict_do_nothing()

    async def reconcile(self, reservation: Reservation, usage: UsageRecord) -> None:
        """Count the tokens `usage` really used instead of the reservation's estimate, and
        record the call's usage and cost."""
        if usage.tenant != reservation.tenant:
            raise InvalidRequest("a reservation is reconciled with the usage of its own tenant",
                                 {"tenant": reservation.tenant})
        async with self._transaction("reconciling token usage") as connection:
            reserved = await self._claim(connection, reservation)
            await self._count(connection, reservation.tenant, reservation.period_key,
                              used=usage.tokens, reserved=-reserved)
            await connection.execute(insert(llm_usage_table).values(**self._usage_row(usage)))

    async def release(self, reservation: Reservation) -> bool:
        """Give a reservation's tokens back; False when it was already reconciled, released
        or freed on expiry."""
        async with self._transaction("releasing reserved tokens") as connection:
            reserved = await self._claim(connection, reservation)
            if reserved:
                await self._count(connection, reservation.tenant, reservation.period_key,
                                  used=0, reserved=-reserved)
        return bool(reserved)

    async def free_expired(self) -> int:
        """Free every tenant's expired reservations; how many there were."""
        async with self._transaction("freeing expired reservations") as connection:
            return await self._free_expired(connection, self.clock(), None)

    async def record(self, usage: UsageRecord) -> None:
        """Record the usage of a call made without a reservation (it counts towards the
        tenant's current period all the same)."""
        period, limit = await self._budget(usage.tenant)
        now = self.clock()
        key = period_key(period, now)
        async with self._transaction("recording token usage") as connection:
            await connection.execute(self._new_period().values(
                tenant=usage.tenant, period_key=key, limit_tokens=limit, used_tokens=0,
                reserved_tokens=0, updated_at=now))
            await self._count(connection, usage.tenant, key, used=usage.tokens, reserved=0)
            await connection.execute(insert(llm_usage_table).values(**self._usage_row(usage)))

    async def task_usage(self, tenant: str, task_id: str) -> UsageTotals:
        """The model usage of one task of `tenant` (all zero for another tenant's task)."""
        c = llm_usage_table.c
        return await self._totals(c.tenant == _check_tenant(tenant), c.task_id == task_id)

    async def tasks_usage(self, tenant: str, task_ids: list[str]) -> dict[str, UsageTotals]:
        """The model usage of each of `tenant`'s tasks among `task_ids` that made model calls
        (one query; another tenant's tasks are absent)."""
        if not task_ids:
            return {}
        c = llm_usage_table.c
        rows = await self._fetch(select(
            c.task_id, func.count(), func.coalesce(func.sum(c.input_tokens), 0),
            func.coalesce(func.sum(c.output_tokens), 0), func.coalesce(func.sum(c.cost), 0.0),
        ).where(c.tenant == _check_tenant(tenant), c.task_id.in_(task_ids)).group_by(c.task_id))
        return {row[0]: UsageTotals(int(row[1]), int(row[2]), int(row[3]), float(row[4]))
                for row in rows}

    async def tenant_usage(self, tenant: str, since: datetime | None = None) -> UsageTotals:
        """The model usage of `tenant`, since `since` when given."""
        c = llm_usage_table.c
        conditions = [c.tenant == _check_tenant(tenant)]
        if since is not None:
            conditions.append(c.at >= since)
        return await self._totals(*conditions)

    async def _totals(self, *conditions: Any) -> UsageTotals:
        c = llm_usage_table.c
        [row] = await self._fetch(select(
            func.count(), func.coalesce(func.sum(c.input_tokens), 0),
            func.coalesce(func.sum(c.output_tokens), 0), func.coalesce(func.sum(c.cost), 0.0),
        ).where(*conditions))
        return UsageTotals(int(row[0]), int(row[1]), int(row[2]), float(row[3]))

    def _usage_row(self, usage: UsageRecord) -> dict[str, Any]:
        return {"at": self.clock(), "tenant": usage.tenant, "task_id": usage.task_id,
                "deployment": usage.deployment, "model": usage.model,
                "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                "cost": usage.cost}

    @staticmethod
    async def _claim(connection: AsyncConnection, reservation: Reservation) -> int:
        """Delete the reservation's row; its tokens if this call deleted it, else 0."""
        table = llm_reservations_table
        row = (await connection.execute(
            delete(table).where(table.c.id == reservation.id,
                                table.c.tenant == reservation.tenant)
            .returning(table.c.tokens))).first()
        return int(row.tokens) if row else 0

    @staticmethod
    async def _count(connection: AsyncConnection, tenant: str, key: str, *, used: int,
                     reserved: int) -> None:
        c = llm_budget_periods_table.c
        await connection.execute(
            update(llm_budget_periods_table).where(c.tenant == tenant, c.period_key == key)
            .values(used_tokens=c.used_tokens + used,
                    reserved_tokens=c.reserved_tokens + reserved, updated_at=utcnow()))

    @classmethod
    async def _free_expired(cls, connection: AsyncConnection, now: datetime,
                            tenant: str | None) -> int:
        table = llm_reservations_table
        condition = table.c.expires_at <= now
        if tenant is not None:
            condition = condition & (table.c.tenant == tenant)
        expired = (await connection.execute(
            delete(table).where(condition).returning(table.c.tenant, table.c.period_key,
                                                     table.c.tokens))).all()
        freed: dict[tuple[str, str], int] = defaultdict(int)
        for row in expired:
            freed[(row.tenant, row.period_key)] += int(row.tokens)
        for (owner, key), tokens in sorted(freed.items()):  # one lock order: no deadlocks
            await cls._count(connection, owner, key, used=0, reserved=-tokens)
        return len(expired)

