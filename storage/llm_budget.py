"""Per-tenant token budgets for model calls, and the usage and cost of every call.

A tenant's budget is a limit of tokens per period ("month", "day" or "total", counted in UTC);
a tenant without one is unlimited but still counted. A call goes through three steps:

    reserve(tenant, estimate)          set the estimate aside, or refuse: TokenBudgetExceeded
    reconcile(reservation, usage)      replace the estimate by the tokens really used, and
                                       record the call's usage and cost (one transaction)
    release(reservation)               give the estimate back (the call was never made)

A gateway may instead **lease** a block of tokens (`lease`: a bigger reservation, sized from
what is left) and hand pieces of it to its calls in memory; a piece is a `Reservation` with
the block's id and the piece's tokens. `settle(settlements)` then reconciles many pieces (or
whole reservations), gives back unused parts of blocks and records usage, all in **one
transaction** (group commit).

Guarantees:
- A reservation is one conditional UPDATE of the period's counters
  (`used + reserved + estimate <= limit`), so concurrent reservations, from any number of
  gateways, never together exceed the limit: each sees the counters the previous ones left.
  (PostgreSQL re-checks the condition on the row a concurrent writer committed; SQLite runs
  writers one at a time.)
- A reservation counts once: reconciling, releasing and expiring each first take its tokens
  off its row (a piece takes its own part of a block; a row left with none is deleted), and
  only the one that took them adjusts `reserved`.
- A lease is granted by the same conditional UPDATE, so the blocks of every gateway together
  never exceed `limit - used`; its size is `max(estimate, min(most, share * remaining))`, so a
  tenant near its limit gets blocks of one call's estimate.
- Rows are locked in one order (reservation rows, then period counters sorted by key), so
  concurrent transactions on PostgreSQL queue rather than deadlock. A reservation nobody reconciles or
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
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.database import EngineStore
from storage.errors import InvalidRequest
from storage.llm_budget_records import (  # re-exported: the store's API
    DEFAULT_PERIOD, DEFAULT_RESERVATION_TTL_S, PERIODS, BudgetStatus, Reservation, Settlement,
    TokenBudgetExceeded, UsageRecord, UsageTotals, _check_tenant, period_key,
)
from storage.messages import utcnow
from storage.models import (
    llm_budget_periods_table, llm_budgets_table, llm_reservations_table, llm_usage_table,
    tasks_table,
)


def usage_of_tasks(task_ids: Sequence[str], tenant: str | None = None) -> Any:
    """The query of the model usage of `task_ids`, a row per (tenant, task) that made model
    calls; `usage_by_task` reads its rows. Only usage recorded under the task's own tenant
    counts: `tenant`'s when given, else each task's as the tasks table has it (a join, so
    that the (tenant, task) index serves either way)."""
    c = llm_usage_table.c
    query = select(
        c.tenant, c.task_id, func.count(), func.coalesce(func.sum(c.input_tokens), 0),
        func.coalesce(func.sum(c.output_tokens), 0), func.coalesce(func.sum(c.cost), 0.0))
    if tenant is not None:
        query = query.where(c.tenant == tenant, c.task_id.in_(list(task_ids)))
    else:
        t = tasks_table.c
        query = query.join(tasks_table, and_(t.tenant == c.tenant, t.id == c.task_id)).where(
            t.id.in_(list(task_ids)))
    return query.group_by(c.tenant, c.task_id)


def usage_by_task(rows: Sequence[Any]) -> dict[tuple[str, str], UsageTotals]:
    """The rows of `usage_of_tasks` by (tenant, task id)."""
    return {(row[0], row[1]): UsageTotals(int(row[2]), int(row[3]), int(row[4]), float(row[5]))
            for row in rows}


class LlmBudgetStore(EngineStore):
    """Token budgets, reservations and usage records. `clock` gives the current time (UTC)."""

    clock: Callable[[], datetime] = staticmethod(utcnow)

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._known_periods: set[tuple[str, str]] = set()  # counters known to exist

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
        raise await self._refusal(tenant, estimate)

    async def lease(self, tenant: str, estimate: int, most: int, share: float,
                    retiring: Reservation | None = None,
                    ttl_s: float = DEFAULT_RESERVATION_TTL_S) -> Reservation:
        """A block of `max(estimate, min(most, share * remaining))` tokens (never more than
        remain) set aside for a gateway's calls, until settled, given back or `ttl_s` passes;
        `TokenBudgetExceeded` when not even `estimate` remains. `retiring`, the unused part of
        the gateway's previous block, is given back in the same transaction (even when the new
        block is refused), so it counts as remaining."""
        _check_tenant(tenant)
        if estimate < 1 or most < estimate or not 0 < share <= 1:
            raise InvalidRequest(f"a lease needs 1 <= estimate ({estimate}) <= most ({most}) "
                                 f"and 0 < share ({share}) <= 1",
                                 {"estimate": estimate, "most": most, "share": share})
        if not ttl_s > 0:
            raise InvalidRequest(f"a reservation's ttl_s must be positive, not {ttl_s}",
                                 {"ttl_s": ttl_s})
        if retiring is not None and retiring.tenant != tenant:
            raise InvalidRequest("a lease gives back a block of its own tenant",
                                 {"tenant": tenant})
        period, limit = await self._budget(tenant)
        now = self.clock()
        key = period_key(period, now)
        periods = llm_budget_periods_table
        c = periods.c
        async with self._transaction("leasing tokens") as connection:
            deltas: dict[tuple[str, str], int] = defaultdict(int)
            if retiring is not None and retiring.tokens > 0:
                if await self._claim(connection, retiring.id, tenant, retiring.tokens):
                    deltas[(tenant, retiring.period_key)] -= retiring.tokens
            for owner_key, tokens in (await self._expire(connection, now, tenant))[1].items():
                deltas[owner_key] -= tokens
            await connection.execute(self._new_period().values(
                tenant=tenant, period_key=key, limit_tokens=limit, used_tokens=0,
                reserved_tokens=0, updated_at=now))
            deltas.setdefault((tenant, key), 0)  # locked with the others, in key order
            for (owner, counted), tokens in sorted(deltas.items()):
                await self._count(connection, owner, counted, used=0, reserved=tokens)
            [row] = (await connection.execute(select(c.limit_tokens, c.used_tokens,
                                                     c.reserved_tokens).where(
                c.tenant == tenant, c.period_key == key))).all()
            size = estimate
            if row.limit_tokens is not None:
                remaining = row.limit_tokens - row.used_tokens - row.reserved_tokens
                size = min(remaining, max(estimate, min(most, int(remaining * share))))
            granted = size >= estimate and (await connection.execute(
                update(periods)
                .where(c.tenant == tenant, c.period_key == key,
                       or_(c.limit_tokens.is_(None),
                           c.used_tokens + c.reserved_tokens + size <= c.limit_tokens))
                .values(reserved_tokens=c.reserved_tokens + size, updated_at=now)
            )).rowcount == 1
            block = Reservation(uuid.uuid4().hex, tenant, key, size,
                                now + timedelta(seconds=ttl_s))
            if granted:
                await connection.execute(insert(llm_reservations_table).values(
                    id=block.id, tenant=tenant, period_key=key, tokens=size, created_at=now,
                    expires_at=block.expires_at))
        if granted:
            return block
        raise await self._refusal(tenant, estimate)

    async def _refusal(self, tenant: str, estimate: int) -> TokenBudgetExceeded:
        status = await self.status(tenant)
        return TokenBudgetExceeded(
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
        await self.settle([Settlement(reservation, usage)])

    async def release(self, reservation: Reservation) -> bool:
        """Give a reservation's tokens back; False when it was already reconciled, released
        or freed on expiry."""
        return bool(await self.settle([Settlement(reservation)]))

    async def record(self, usage: UsageRecord) -> None:
        """Record the usage of a call made without a reservation (it counts towards the
        tenant's current period all the same)."""
        await self.settle([Settlement(usage=usage)])

    async def free_expired(self) -> int:
        """Free every tenant's expired reservations; how many there were."""
        async with self._transaction("freeing expired reservations") as connection:
            return await self._free_expired(connection, self.clock(), None)

    async def settle(self, settlements: Sequence[Settlement]) -> int:
        """Apply `settlements` in one transaction: all of them or (on a failure) none. Each
        reservation's tokens are taken off its row, if it still has them, and no longer
        count as reserved; each usage counts as used in its reservation's period (without
        one, in its tenant's current period) and is recorded. How many reservations still had
        their tokens."""
        if not settlements:
            return 0
        now = self.clock()
        claims: dict[tuple[str, str, str], int] = defaultdict(int)  # (id, tenant, key) -> tokens
        for item in settlements:
            if item.reservation is not None:
                r = item.reservation
                claims[(r.id, r.tenant, r.period_key)] += r.tokens
        periods: dict[str, str | None] = {}  # tenant -> period, for usage without reservation
        for item in settlements:
            if item.reservation is None and item.usage is not None:
                periods[item.usage.tenant] = periods.get(item.usage.tenant) or item.period
        unknown = sorted(tenant for tenant, period in periods.items()
                         if period is None
                         or (tenant, period_key(period, now)) not in self._known_periods)
        budgets = llm_budgets_table.c
        async with self._transaction("recording token usage") as connection:
            if unknown:
                rows = (await connection.execute(select(
                    budgets.tenant, budgets.period, budgets.limit_tokens).where(
                    budgets.tenant.in_(unknown)))).all()
                limits = {row.tenant: (row.period, row.limit_tokens) for row in rows}
                for tenant in unknown:
                    periods[tenant] = limits.get(tenant, (DEFAULT_PERIOD, None))[0]
                await connection.execute(self._new_period(), [
                    {"tenant": tenant, "period_key": period_key(str(periods[tenant]), now),
                     "limit_tokens": limits.get(tenant, (DEFAULT_PERIOD, None))[1],
                     "used_tokens": 0, "reserved_tokens": 0, "updated_at": now}
                    for tenant in unknown])
            deltas: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
            claimed = 0
            for (row_id, tenant, key), tokens in sorted(claims.items()):
                if await self._claim(connection, row_id, tenant, tokens):
                    deltas[(tenant, key)][1] -= tokens
                    claimed += 1
            if claims:
                table = llm_reservations_table
                await connection.execute(delete(table).where(
                    table.c.id.in_(sorted({row_id for row_id, _, _ in claims})),
                    table.c.tokens <= 0))
            usage_rows = []
            for item in settlements:
                if item.usage is None:
                    continue
                key = (item.reservation.period_key if item.reservation is not None else
                       period_key(str(periods[item.usage.tenant]), now))
                deltas[(item.usage.tenant, key)][0] += item.usage.tokens
                usage_rows.append(self._usage_row(item.usage, now))
            for (tenant, key), (used, reserved) in sorted(deltas.items()):
                await self._count(connection, tenant, key, used=used, reserved=reserved)
            if usage_rows:
                await connection.execute(insert(llm_usage_table), usage_rows)
        self._known_periods.update((tenant, period_key(str(period), now))
                                   for tenant, period in periods.items())
        return claimed

    async def task_usage(self, tenant: str, task_id: str) -> UsageTotals:
        """The model usage of one task of `tenant` (all zero for another tenant's task)."""
        c = llm_usage_table.c
        return await self._totals(c.tenant == _check_tenant(tenant), c.task_id == task_id)

    async def tasks_usage(self, tenant: str, task_ids: list[str]) -> dict[str, UsageTotals]:
        """The model usage of each of `tenant`'s tasks among `task_ids` that made model calls
        (one query; another tenant's tasks are absent)."""
        if not task_ids:
            return {}
        rows = await self._fetch(usage_of_tasks(task_ids, _check_tenant(tenant)))
        return {task_id: used for (_, task_id), used in usage_by_task(rows).items()}

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

    @staticmethod
    def _usage_row(usage: UsageRecord, at: datetime) -> dict[str, Any]:
        return {"at": at, "tenant": usage.tenant, "task_id": usage.task_id,
                "deployment": usage.deployment, "model": usage.model,
                "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                "cost": usage.cost}

    @staticmethod
    async def _claim(connection: AsyncConnection, row_id: str, tenant: str, tokens: int) -> bool:
        """Take `tokens` off reservation row `row_id` of `tenant`; False when it no longer has
        them (settled, given back or expired)."""
        c = llm_reservations_table.c
        return (await connection.execute(
            update(llm_reservations_table)
            .where(c.id == row_id, c.tenant == tenant, c.tokens >= tokens)
            .values(tokens=c.tokens - tokens))).rowcount == 1

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
        rows, freed = await cls._expire(connection, now, tenant)
        for (owner, key), tokens in sorted(freed.items()):  # one lock order: no deadlocks
            await cls._count(connection, owner, key, used=0, reserved=-tokens)
        return rows

    @staticmethod
    async def _expire(connection: AsyncConnection, now: datetime,
                      tenant: str | None) -> tuple[int, dict[tuple[str, str], int]]:
        """Delete the expired reservation rows (of `tenant`, or everyone's): how many, and
        their tokens by (tenant, period key), still to be taken off `reserved`."""
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
        return len(expired), freed
