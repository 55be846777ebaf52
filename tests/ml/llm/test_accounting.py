"""Leased budgets and group commit of usage: two gateways over one store never overspend a
budget, a lease's unused tokens come back (on time, or when its gateway died), a small
remainder is usable by the other gateway, and a failing or crashed writer loses nothing that
was acknowledged as written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ml.llm.accounting import LEASE_S, TokenAccounts
from ml.llm.config import LlmConfig
from ml.llm.settings import LlmSettings
from ml.llm.types import BudgetExceeded
from ml.llm.usage_writer import UsageWriter
from storage.database import migrate_async
from storage.errors import StorageError
from storage.llm_budget import LlmBudgetStore, Reservation, Settlement, UsageRecord
from tests.support.databases import DATABASE_KINDS, database_url_fixture

SETTINGS = LlmSettings(LlmConfig.from_dict({"deployments": [
    {"name": "only", "group": "chat", "provider": "openai",
     "base_url": "http://127.0.0.1:9/v1", "model": "m"}]}))


@pytest.fixture(params=DATABASE_KINDS, ids=DATABASE_KINDS)
def any_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url_fixture(request.param, tmp_path)


@pytest.fixture
async def two_stores(any_database_url: str) -> AsyncIterator[list[LlmBudgetStore]]:
    """Two stores on one database: the stores of two gateway processes."""
    await migrate_async(any_database_url)
    stores = [await LlmBudgetStore.open(any_database_url) for _ in range(2)]
    yield stores
    for store in stores:
        await store.close()


def usage(tenant: str, tokens: int, task_id: str | None = None) -> UsageRecord:
    return UsageRecord(tenant=tenant, deployment="only", model="m", input_tokens=tokens // 2,
                       output_tokens=tokens - tokens // 2, cost=0.0, task_id=task_id)


async def test_a_burst_across_two_gateways_never_overspends(
    two_stores: list[LlmBudgetStore],
) -> None:
    gateways = [TokenAccounts(store, SETTINGS) for store in two_stores]
    await gateways[0].set_limit("acme", 1000, "month")

    async def call(index: int) -> Reservation | None:
        accounts = gateways[index % 2]
        try:
            piece = await accounts.reserve("acme", 100)
        except BudgetExceeded:
            return None
        assert piece is not None
        await asyncio.sleep(0.01)  # the model answers
        await accounts.charge(piece, usage("acme", 100, task_id=f"t{index}"))
        return piece

    outcomes = await asyncio.gather(*(call(i) for i in range(50)))
    for accounts in gateways:
        await accounts.close()
    status = await two_stores[0].status("acme")

    granted = [piece for piece in outcomes if piece is not None]
    assert 5 <= len(granted) <= 10
    assert status.used_tokens == 100 * len(granted) <= 1000
    assert status.reserved_tokens == 0  # every block given back or spent
    assert (await two_stores[1].tenant_usage("acme")).calls == len(granted)


async def test_a_leases_unused_tokens_come_back_when_it_expires(
    two_stores: list[LlmBudgetStore],
) -> None:
    clock = [100.0]
    accounts = TokenAccounts(two_stores[0], SETTINGS, clock=lambda: clock[0])
    await accounts.set_limit("acme", 1000, "month")
    piece = await accounts.reserve("acme", 100)
    leased = (await two_stores[0].status("acme")).reserved_tokens
    assert piece is not None and leased > 100  # a block, not just this call's estimate

    clock[0] += LEASE_S
    assert accounts.expire_leases() == 1
    await accounts.writer.drain()
    assert (await two_stores[1].status("acme")).reserved_tokens == 100  # the call in flight

    await accounts.charge(piece, usage("acme", 60, task_id="t1"))
    status = await two_stores[1].status("acme")
    assert (status.used_tokens, status.reserved_tokens) == (60, 0)
    await accounts.close()


async def test_the_block_of_a_gateway_that_died_comes_back_after_its_ttl(
    two_stores: list[LlmBudgetStore],
) -> None:
    store = two_stores[0]
    now = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
    store.clock = lambda: now
    await store.set_limit("acme", 1000)
    block = await store.lease("acme", 100, 5000, 0.25, ttl_s=60)
    assert block.tokens == 250 and (await store.status("acme")).reserved_tokens == 250

    now += timedelta(seconds=61)  # nobody settled it: its gateway is gone
    assert await store.free_expired() == 1
    assert (await store.status("acme")).remaining_tokens == 1000


async def test_the_small_remainder_is_still_usable_by_the_other_gateway(
    two_stores: list[LlmBudgetStore],
) -> None:
    first, second = (TokenAccounts(store, SETTINGS) for store in two_stores)
    await first.set_limit("acme", 300, "month")
    await second.set_limit("acme", 300, "month")

    taken = [await first.reserve("acme", 100), await first.reserve("acme", 100)]
    last = await second.reserve("acme", 100)  # near the limit, blocks are one estimate
    with pytest.raises(BudgetExceeded) as refused:
        await first.reserve("acme", 100)

    assert last is not None and all(piece is not None for piece in taken)
    assert refused.value.details["limit_tokens"] == 300
    await first.release(taken[0])
    await first.flush()  # its unused block goes back to the store...
    assert await second.reserve("acme", 100) is not None  # ...and the other gateway uses it
    await first.close()
    await second.close()


async def test_concurrent_usage_shares_commits_and_a_tasks_usage_is_written_first(
    two_stores: list[LlmBudgetStore],
) -> None:
    accounts = TokenAccounts(two_stores[0], SETTINGS)

    await asyncio.gather(*(accounts.charge(None, usage("acme", 10, task_id=f"t{i}"))
                           for i in range(20)))

    assert accounts.writer.flushes < 20  # group commit: fewer transactions than calls
    totals = await two_stores[1].tasks_usage("acme", [f"t{i}" for i in range(20)])
    assert len(totals) == 20  # every charge returned after its usage was committed
    await accounts.close()


async def test_a_failing_writer_retries_and_loses_nothing_nor_counts_twice(
    two_stores: list[LlmBudgetStore], monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = two_stores[0]
    writer = UsageWriter(store, window_s=0.001)
    real_settle = store.settle
    failures = [2]

    async def flaky(settlements: list[Settlement]) -> int:
        if failures[0]:
            failures[0] -= 1
            raise StorageError("the database is restarting")
        return await real_settle(settlements)

    monkeypatch.setattr(store, "settle", flaky)
    written = [writer.submit(Settlement(usage=usage("acme", 10, task_id="t1")), durable=True)
               for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(future.done() for future in written)  # not acknowledged: not written

    await asyncio.wait_for(asyncio.gather(*written), 5)

    assert (await two_stores[1].task_usage("acme", "t1")).calls == 3  # each exactly once


async def test_a_crashed_writer_keeps_its_queue_and_acknowledged_usage_is_stored(
    two_stores: list[LlmBudgetStore],
) -> None:
    writer = UsageWriter(two_stores[0], window_s=10.0)
    acknowledged = writer.submit(Settlement(usage=usage("acme", 10, task_id="t1")), True)
    await acknowledged
    queued = writer.submit(Settlement(usage=usage("acme", 10, task_id="t2")))
    assert writer._task is not None
    writer._task.cancel()  # the flush loop dies while a write waits
    await asyncio.sleep(0)

    assert (await two_stores[1].task_usage("acme", "t1")).calls == 1
    assert not queued.done()
    await writer.drain()  # the next write or drain starts the loop again
    assert (await two_stores[1].task_usage("acme", "t2")).calls == 1
