"""Several tenants' collections in one process within a memory bound, and loading one from
storage.

`CollectionCache` holds `CollectionIndex`es keyed by (tenant, collection name), never by name
alone. Guarantees:
- A collection is loaded on first use through the `loader` callback; concurrent `get`s of the
  same key share one load. A failed load is not remembered: the next `get` tries again.
- After every `get` and `resized`, least-recently-used collections are evicted until the sum
  of `memory_bytes()` is within `max_bytes`; the collection just asked for is never evicted,
  so a single collection larger than the bound is still served (alone).
- `invalidate` drops one collection (the next `get` reloads it from storage).

`load_collection` rebuilds one collection from `KnowledgeStore`, page by page, giving every
chunk its stored id: the rebuilt index answers exactly as the one it replaces. Each page goes
into the index in one operation, in a worker thread, so a large collection's build (minutes
for HNSW at 100,000 chunks on one core) neither blocks the replica's event loop nor adds its
vectors one document at a time.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from ml.knowledge.search import ChunkRecord, CollectionIndex, DocumentInfo
from storage.knowledge_store import KnowledgeStore, StoredChunk

CollectionKey = tuple[str, str]
Loader = Callable[[str, str], Awaitable[CollectionIndex]]
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


class CollectionCache:
    """Collections in memory, loaded lazily and evicted least-recently-used by size."""

    def __init__(self, loader: Loader, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.loader = loader
        self.max_bytes = max_bytes
        self._loaded: OrderedDict[CollectionKey, CollectionIndex] = OrderedDict()
        self._loading: dict[CollectionKey, asyncio.Future[CollectionIndex]] = {}
        self.evictions = 0

    def __contains__(self, key: object) -> bool:
        return key in self._loaded

    def keys(self) -> list[CollectionKey]:
        """The loaded collections, least recently used first."""
        return list(self._loaded)

    def memory_bytes(self) -> int:
        return sum(collection.memory_bytes() for collection in self._loaded.values())

    async def get(self, tenant: str, name: str) -> CollectionIndex:
        """The collection `name` of `tenant`, loading it when it is not in memory."""
        key = (tenant, name)
        found = self._loaded.get(key)
        if found is not None:
            self._loaded.move_to_end(key)
            self._evict(keep=key)
            return found
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[CollectionIndex] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            collection = await self.loader(tenant, name)
            if collection.key != key:
                raise ValueError(f"the loader returned collection {collection.key} for {key}")
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: waiters re-raise it, nobody must
            raise
        finally:
            del self._loading[key]
        future.set_result(collection)
        self._loaded[key] = collection
        self._evict(keep=key)
        return collection

    def peek(self, tenant: str, name: str) -> CollectionIndex | None:
        """The collection if it is in memory, without loading it or changing its recency."""
        return self._loaded.get((tenant, name))

    def resized(self, tenant: str, name: str) -> None:
        """Say a loaded collection changed size (documents added); evicts others if needed."""
        key = (tenant, name)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            self._evict(keep=key)

    def invalidate(self, tenant: str, name: str) -> bool:
        """Drop a collection from memory; whether it was loaded."""
        return self._loaded.pop((tenant, name), None) is not None

    def _evict(self, keep: CollectionKey) -> None:
        total = self.memory_bytes()
        for key in list(self._loaded):
            if total <= self.max_bytes:
                return
            if key == keep:
                continue
            total -= self._loaded.pop(key).memory_bytes()
            self.evictions += 1


def vectors_of(chunks: list[StoredChunk], dimension: int) -> np.ndarray:
    """The stored chunks' vectors as one float32 matrix."""
    matrix = np.frombuffer(b"".join(chunk.vector for chunk in chunks), dtype="<f4")
    return matrix.reshape(len(chunks), dimension).astype(np.float32, copy=False)


async def load_collection(store: KnowledgeStore, tenant: str, name: str,
                          **index_options: Any) -> CollectionIndex:
    """`tenant`'s collection `name` rebuilt from storage; `NotFound` when it does not exist."""
    stored = await store.collection(tenant, name)
    collection = CollectionIndex(tenant, name, stored.dimension, **index_options)
    documents = {document.id: document for document in await store.all_documents(tenant, name)}
    async for page in store.chunk_pages(tenant, name):
        by_document: dict[str, list[StoredChunk]] = {}
        for chunk in page:
            if chunk.document_id in documents:  # else deleted between the two reads
                by_document.setdefault(chunk.document_id, []).append(chunk)
        if not by_document:
            continue
        entries = [(DocumentInfo(documents[document_id].id, documents[document_id].name,
                                 documents[document_id].metadata),
                    [ChunkRecord(c.id, c.document_id, c.ordinal, c.text, c.start, c.end)
                     for c in chunks])
                   for document_id, chunks in by_document.items()]
        vectors = vectors_of([c for chunks in by_document.values() for c in chunks],
                             collection.dimension)
        # the collection is nobody else's until it is returned: build it off the event loop
        await asyncio.to_thread(collection.extend_documents, entries, vectors)
    return collection


def store_loader(store: KnowledgeStore, **index_options: Any) -> Loader:
    """A `CollectionCache` loader reading from `store`."""

    async def load(tenant: str, name: str) -> CollectionIndex:
        return await load_collection(store, tenant, name, **index_options)

    return load
