"""Pool bounds operators set: kept per agent type, replaced by a later setting, removed on
reset, and there for whoever opens the database next."""

from __future__ import annotations

from storage.pool_bounds import PoolBoundsStore


async def test_bounds_are_kept_per_type_replaced_and_removed(database_url: str) -> None:
    async with await PoolBoundsStore.open(database_url) as store:
        assert await store.all() == {}
        await store.put("calculator", 1, 4)
        await store.put("learning", 2, 2)
        await store.put("calculator", 0, 3)
        assert await store.all() == {"calculator": (0, 3), "learning": (2, 2)}

        assert await store.remove("learning") is True
        assert await store.remove("learning") is False

    async with await PoolBoundsStore.open(database_url) as reopened:
        assert await reopened.all() == {"calculator": (0, 3)}
