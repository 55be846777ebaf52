"""Token budgets: atomic reservations (a burst never overspends), reconciliation with the real
usage, release and expiry, periods, usage and cost per task and tenant, tenancy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest

from storage.errors import InvalidRequest
from storage.llm_budget import (
    LlmBudgetStore, Reservation, TokenBudgetExceeded, UsageRecord, UsageTotals, period_key,
)


@pytest.fixture
async def budgets(database_url: str) -> AsyncIterator[LlmBudgetStore]:
    async with await LlmBudgetStore.open(database_url) as store:
        yield store


def _usage(tenant: str, input_tokens: int, output_tokens: int, *, task_id: str | None = None,
           cost: float | None = None) -> UsageRecord:
    return UsageRecord(tenant=tenant, deployment="primary", model="gpt-test",
                       input_tokens=input_tokens, output_tokens=output_tokens, cost=cost,
                       task_id=task_id)


async def test_a_burst_of_50_reservations_against_a_budget_for_10_grants_exactly_10(
    database_url: str,
) -> None:
    # Five stores, five engines: as many connections as five gateway replicas would use.
    stores = [await LlmBudgetStore.open(database_url) for _ in range(5)]
    try:
        await stores[0].set_limit("acme", 1000)

        async def reserve(index: int) -> Reservation | None:
            try:
                return await stores[index % 5].reserve("acme", 100)
            except TokenBudgetExceeded:
                return None

        outcomes = await asyncio.gather(*(reserve(i) for i in range(50)))

        granted = [outcome for outcome in outcomes if outcome is not None]
        assert len(granted) == 10
        status = await stores[0].status("acme")
        assert (status.used_tokens, status.reserved_tokens, status.remaining_tokens) == (
            0, 1000, 0)
        for reservation in granted:
            await stores[1].reconcile(reservation, _usage("acme", 60, 40))
        status = await stores[2].status("acme")
        assert (status.used_tokens, status.reserved_tokens) == (1000, 0)
    finally:
        for store in stores:
            await store.close()


async def test_refusal_says_what_is_left_and_changes_nothing(budgets: LlmBudgetStore) -> None:
    await budgets.set_limit("acme", 500)
    await budgets.reserve("acme", 300)

    with pytest.raises(TokenBudgetExceeded) as refused:
        await budgets.reserve("acme", 300)

    assert "200 of its 500 tokens" in str(refused.value)
    assert refused.value.details["estimate"] == 300
    status = await budgets.status("acme")
    assert (status.used_tokens, status.reserved_tokens) == (0, 300)
    assert (await budgets.reserve("acme", 200)).tokens == 200


async def test_reconcile_counts_the_real_usage_even_above_the_estimate(
    budgets: LlmBudgetStore,
) -> None:
    await budgets.set_limit("acme", 1000)
    small = await budgets.reserve("acme", 100)
    large = await budgets.reserve("acme", 500)

    await budgets.reconcile(small, _usage("acme", 100, 150, task_id="t1", cost=0.25))
    await budgets.reconcile(large, _usage("acme", 10, 20, task_id="t1", cost=0.05))

    status = await budgets.status("acme")
    assert (status.used_tokens, status.reserved_tokens, status.remaining_tokens) == (
        280, 0, 720)
    assert await budgets.task_usage("acme", "t1") == UsageTotals(2, 110, 170, pytest.approx(0.3))


async def test_a_reservation_counts_once_whichever_way_it_ends(budgets: LlmBudgetStore) -> None:
    await budgets.set_limit("acme", 1000)
    reservation = await budgets.reserve("acme", 400)

    assert await budgets.release(reservation) is True
    assert await budgets.release(reservation) is False
    await budgets.reconcile(reservation, _usage("acme", 30, 20))  # the call happened after all

    status = await budgets.status("acme")
    assert (status.used_tokens, status.reserved_tokens) == (50, 0)


async def test_expired_reservations_are_freed_and_their_late_usage_still_counts(
    budgets: LlmBudgetStore,
) -> None:
    await budgets.set_limit("acme", 100)
    now = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
    budgets.clock = lambda: now
    abandoned = await budgets.reserve("acme", 100, ttl_s=60)
    with pytest.raises(TokenBudgetExceeded):
        await budgets.reserve("acme", 1)

    now += timedelta(seconds=61)
    fresh = await budgets.reserve("acme", 100)  # the expired one was freed first

    assert (await budgets.status("acme")).reserved_tokens == 100
    await budgets.reconcile(abandoned, _usage("acme", 5, 5))
    await budgets.release(fresh)
    status = await budgets.status("acme")
    assert (status.used_tokens, status.reserved_tokens) == (10, 0)


async def test_free_expired_frees_every_tenant_and_only_what_expired(
    budgets: LlmBudgetStore,
) -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
    budgets.clock = lambda: now
    for tenant in ("acme", "globex"):
        await budgets.set_limit(tenant, 200)
        await budgets.reserve(tenant, 100, ttl_s=10)
    await budgets.reserve("acme", 50, ttl_s=3600)

    now += timedelta(seconds=11)
    assert await budgets.free_expired() == 2

    assert [(await budgets.status(t)).reserved_tokens for t in ("acme", "globex")] == [50, 0]


async def test_a_new_month_starts_with_a_fresh_budget(budgets: LlmBudgetStore) -> None:
    now = datetime(2026, 11, 30, 23, 59, tzinfo=timezone.utc)
    budgets.clock = lambda: now
    await budgets.set_limit("acme", 100, period="month")
    november = await budgets.reserve("acme", 100)
    with pytest.raises(TokenBudgetExceeded):
        await budgets.reserve("acme", 1)

    now = datetime(2026, 12, 1, 0, 1, tzinfo=timezone.utc)
    december = await budgets.reserve("acme", 100)
    await budgets.reconcile(november, _usage("acme", 50, 50))

    assert (november.period_key, december.period_key) == ("2026-11", "2026-12")
    status = await budgets.status("acme")
    assert (status.period_key, status.used_tokens, status.reserved_tokens) == ("2026-12", 0, 100)


async def test_raising_the_limit_applies_to_the_current_period(budgets: LlmBudgetStore) -> None:
    await budgets.set_limit("acme", 100)
    await budgets.reserve("acme", 100)
    with pytest.raises(TokenBudgetExceeded):
        await budgets.reserve("acme", 50)

    await budgets.set_limit("acme", 200)
    await budgets.reserve("acme", 50)
    await budgets.set_limit("acme", None)
    await budgets.reserve("acme", 10_000)

    status = await budgets.status("acme")
    assert (status.limit_tokens, status.reserved_tokens, status.remaining_tokens) == (
        None, 10_150, None)


async def test_one_tenants_budget_and_usage_never_touch_anothers(
    budgets: LlmBudgetStore,
) -> None:
    await budgets.set_limit("acme", 100)
    acme = await budgets.reserve("acme", 100)
    globex = await budgets.reserve("globex", 5000)  # no budget: unlimited, still counted

    await budgets.reconcile(globex, _usage("globex", 10, 10, task_id="t1", cost=1.0))
    await budgets.reconcile(acme, _usage("acme", 1, 1, task_id="t2"))
    forged = Reservation(globex.id, "acme", globex.period_key, globex.tokens, globex.expires_at)

    assert await budgets.release(forged) is False
    assert await budgets.task_usage("acme", "t1") == UsageTotals(0, 0, 0, 0.0)
    assert await budgets.task_usage("globex", "t1") == UsageTotals(1, 10, 10, 1.0)
    assert (await budgets.tenant_usage("acme")).calls == 1
    assert (await budgets.status("globex")).used_tokens == 20
    assert (await budgets.status("acme")).used_tokens == 2
    with pytest.raises(InvalidRequest):
        await budgets.reconcile(acme, _usage("globex", 1, 1))


async def test_usage_without_a_reservation_counts_towards_the_period(
    budgets: LlmBudgetStore,
) -> None:
    await budgets.set_limit("acme", 100)
    await budgets.record(_usage("acme", 40, 40, cost=0.1))

    with pytest.raises(TokenBudgetExceeded):
        await budgets.reserve("acme", 21)
    assert (await budgets.tenant_usage("acme")).cost == pytest.approx(0.1)
    since = datetime.now(timezone.utc) + timedelta(hours=1)
    assert (await budgets.tenant_usage("acme", since=since)).calls == 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: s.reserve("acme", 0), "estimate must be at least 1"),
    (lambda s: s.reserve("", 10), "tenant '' must be"),
    (lambda s: s.reserve("acme", 10, ttl_s=0), "ttl_s must be positive"),
    (lambda s: s.set_limit("acme", -1), "must not be negative"),
    (lambda s: s.set_limit("acme", 10, period="week"), "period 'week' is not one of"),
])
async def test_bad_input_is_refused_clearly(budgets: LlmBudgetStore, call, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await call(budgets)


def test_period_keys() -> None:
    at = datetime(2026, 12, 4, 23, 0, tzinfo=timezone.utc)
    assert [period_key(p, at) for p in ("month", "day", "total")] == [
        "2026-12", "2026-12-04", "total"]


async def test_a_task_read_with_its_usage_counts_only_its_own_tenants_calls(
    database_url: str,
) -> None:
    """What a waiter gets back, read on its own (`TaskStore.get_tasks_with_usage`) or by the
    commit of the task's outcome (`WriteBatch.read_back`): usage recorded under another tenant
    with the same task id is never added to a task."""
    from storage.task_store import TaskStore, WriteBatch
    from tests.storage.test_task_store import task_row

    async with await TaskStore.open(database_url) as tasks:
        mine, silent = task_row(tenant="acme"), task_row(tenant="acme")
        await tasks.apply(WriteBatch(new_tasks=[mine, silent]))
        usage = LlmBudgetStore(tasks.engine)
        for tenant, tokens in (("acme", 10), ("acme", 20), ("globex", 1000)):
            await usage.record(UsageRecord(tenant=tenant, deployment="d", model="m",
                                           input_tokens=tokens, output_tokens=1, cost=0.5,
                                           task_id=mine["id"]))
        ids = [mine["id"], silent["id"], "no-such-task"]
        read = await tasks.get_tasks_with_usage(ids)
        finishing = WriteBatch(task_updates=[{"id": mine["id"], "status": "succeeded"}],
                               read_back=[mine["id"], silent["id"]])
        await tasks.apply(finishing)
    expected = {"input_tokens": 30, "output_tokens": 2, "cost_usd": 1.0, "calls": 2}
    assert set(read) == {mine["id"], silent["id"]}
    assert read[mine["id"]].llm_usage == expected and read[silent["id"]].llm_usage is None
    assert set(finishing.found) == {mine["id"], silent["id"]}
    assert finishing.found[mine["id"]].status.value == "succeeded"  # read after the writes
    assert finishing.found[mine["id"]].llm_usage == expected
