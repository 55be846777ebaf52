"""Idempotency lookups that arrive together are answered by one query."""

from __future__ import annotations

import asyncio

import pytest

from actors.idempotency import IdempotencyLookup
from storage.errors import StorageError


class Store:
    """Holds `known`; each query takes a moment, so lookups pile up behind it."""

    def __init__(self, known: dict[tuple[str, str], str], fail: bool = False) -> None:
        self.known = known
        self.fail = fail
        self.asked: list[set[tuple[str, str]]] = []

    async def task_ids_by_idempotency_keys(self, keys):
        self.asked.append(set(keys))
        await asyncio.sleep(0.01)
        if self.fail:
            raise StorageError("database gone")
        return {key: self.known[key] for key in keys if key in self.known}


async def test_lookups_arriving_together_share_queries_and_get_their_own_answers() -> None:
    store = Store({("acme", "k3"): "t3", ("globex", "k3"): "g3"})
    lookup = IdempotencyLookup(store)
    asks = [[("acme", f"k{i}")] for i in range(20)] + [[("globex", "k3"), ("globex", "k4")]]
    answers = await asyncio.gather(*(lookup.find(keys) for keys in asks))
    assert answers[3] == {("acme", "k3"): "t3"}
    assert answers[-1] == {("globex", "k3"): "g3"}
    assert all(a == {} for i, a in enumerate(answers[:-1]) if i != 3)
    assert len(store.asked) == 1  # all arrived before the query started
    assert store.asked[0] == {k for keys in asks for k in keys}


async def test_lookups_arriving_during_a_query_share_the_next_one() -> None:
    store = Store({})
    lookup = IdempotencyLookup(store)
    first = asyncio.create_task(lookup.find([("acme", "first")]))
    await asyncio.sleep(0.002)  # its query is running
    await asyncio.gather(*(lookup.find([("acme", f"k{i}")]) for i in range(10)), first)
    assert [len(keys) for keys in store.asked] == [1, 10]


async def test_a_failed_query_fails_its_lookups_and_the_next_ones_still_run() -> None:
    store = Store({("acme", "k"): "t"}, fail=True)
    lookup = IdempotencyLookup(store)
    with pytest.raises(StorageError):
        await lookup.find([("acme", "k")])
    store.fail = False
    assert await lookup.find([("acme", "k")]) == {("acme", "k"): "t"}


async def test_a_caller_that_stops_waiting_does_not_disturb_the_others() -> None:
    store = Store({("acme", "k"): "t"})
    lookup = IdempotencyLookup(store)
    first = asyncio.create_task(lookup.find([("acme", "x")]))
    await asyncio.sleep(0)  # its query is running
    leaving = asyncio.create_task(lookup.find([("acme", "k")]))
    staying = asyncio.create_task(lookup.find([("acme", "k")]))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == {("acme", "k"): "t"} and await first == {}
    assert leaving.cancelled()


async def test_no_keys_need_no_query() -> None:
    store = Store({})
    assert await IdempotencyLookup(store).find([]) == {}
    assert store.asked == []
