"""Collections of several tenants in one process: loaded lazily once, keyed by tenant and name,
evicted least-recently-used to stay within the memory bound."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ml.knowledge.collections import CollectionCache
from ml.knowledge.search import ChunkRecord, CollectionIndex, DocumentInfo

DIMENSION = 32


def _collection(tenant: str, name: str, chunks: int) -> CollectionIndex:
    collection = CollectionIndex(tenant, name, DIMENSION)
    rng = np.random.default_rng(chunks)
    vectors = rng.normal(size=(chunks, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    collection.add_document(
        DocumentInfo("doc", f"{tenant}-{name}.md"),
        [ChunkRecord(i, "doc", i, f"{tenant} {name} chunk {i}", 0, 1) for i in range(chunks)],
        vectors)
    return collection


class Loader:
    """Builds collections of `size` chunks, counting loads; fails for names in `failing`."""

    def __init__(self, size: int = 100) -> None:
        self.size = size
        self.loads: list[tuple[str, str]] = []
        self.failing: set[str] = set()

    async def __call__(self, tenant: str, name: str) -> CollectionIndex:
        self.loads.append((tenant, name))
        await asyncio.sleep(0.01)
        if name in self.failing:
            raise RuntimeError(f"storage is down for {name}")
        return _collection(tenant, name, self.size)


def _bytes_of(chunks: int) -> int:
    """The size of the largest collection of `chunks` chunks these tests load."""
    return max(_collection(tenant, name, chunks).memory_bytes()
               for tenant in ("acme", "globex", "initech") for name in ("a", "b", "c"))


async def test_collections_load_once_and_are_keyed_by_tenant_and_name() -> None:
    loader = Loader()
    cache = CollectionCache(loader)

    acme, again, globex = await asyncio.gather(
        cache.get("acme", "handbook"), cache.get("acme", "handbook"),
        cache.get("globex", "handbook"))

    assert acme is again and acme is not globex
    assert loader.loads == [("acme", "handbook"), ("globex", "handbook")]
    assert acme.chunks[0].text == "acme handbook chunk 0"
    assert globex.chunks[0].text == "globex handbook chunk 0"
    await cache.get("acme", "handbook")
    assert len(loader.loads) == 2


async def test_the_least_recently_used_collection_is_evicted_past_the_bound() -> None:
    loader = Loader(size=200)
    cache = CollectionCache(loader, max_bytes=int(2.5 * _bytes_of(200)))
    await cache.get("acme", "a")
    await cache.get("globex", "b")
    await cache.get("acme", "a")  # now b is the least recently used

    await cache.get("initech", "c")

    assert cache.keys() == [("acme", "a"), ("initech", "c")]
    assert cache.memory_bytes() <= cache.max_bytes and cache.evictions == 1
    await cache.get("globex", "b")  # loaded again from storage
    assert loader.loads.count(("globex", "b")) == 2
    assert cache.keys() == [("initech", "c"), ("globex", "b")]


async def test_a_collection_larger_than_the_bound_is_still_served_alone() -> None:
    cache = CollectionCache(Loader(size=300), max_bytes=_bytes_of(50))
    await cache.get("acme", "small")
    big = await cache.get("acme", "big")
    assert cache.keys() == [("acme", "big")] and len(big) == 300


async def test_growing_collections_evict_others_when_told() -> None:
    cache = CollectionCache(Loader(size=100), max_bytes=int(2.2 * _bytes_of(100)))
    first = await cache.get("acme", "a")
    await cache.get("acme", "b")
    first.add_document(DocumentInfo("more", "more.md"),
                       [ChunkRecord(1000 + i, "more", i, "more", 0, 1) for i in range(100)],
                       np.eye(100, DIMENSION, dtype=np.float32))
    cache.resized("acme", "a")
    assert cache.keys() == [("acme", "a")]


async def test_a_failed_load_is_reported_to_every_waiter_and_retried_later() -> None:
    loader = Loader()
    loader.failing.add("flaky")
    cache = CollectionCache(loader)

    results = await asyncio.gather(cache.get("acme", "flaky"), cache.get("acme", "flaky"),
                                   return_exceptions=True)

    assert all(isinstance(result, RuntimeError) for result in results)
    assert loader.loads == [("acme", "flaky")]
    loader.failing.clear()
    assert len(await cache.get("acme", "flaky")) == 100
    assert cache.invalidate("acme", "flaky") and ("acme", "flaky") not in cache


async def test_a_loader_returning_another_tenants_collection_is_refused() -> None:
    async def wrong(tenant: str, name: str) -> CollectionIndex:
        return _collection("someone-else", name, 10)

    cache = CollectionCache(wrong)
    with pytest.raises(ValueError, match="someone-else"):
        await cache.get("acme", "handbook")
    assert cache.keys() == []
