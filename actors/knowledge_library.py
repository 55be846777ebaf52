"""A `knowledge` replica's collections: loaded lazily from storage into a memory-bounded LRU,
kept current across replicas, updated in place by this replica's own writes.

Storage is the truth; every index here is a cache (`ml.knowledge.collections.CollectionCache`,
keyed by tenant and collection). Guarantees:
- Fresh across replicas: before each search, answer, write or delete, the collection's content
  signature (`storage.knowledge_uploads`, one aggregate read) is compared with the signature of
  what this replica holds. A difference (another replica, or anyone, wrote) drops the index and
  rebuilds it from storage, so a write on one replica is seen by every other from their next
  operation on that collection. A replica's own writes update its index incrementally and
  record the signature they lead to; if another write interleaved, the stored signature differs
  and the next operation rebuilds.
- Serialised per collection: operations on one collection in one replica take turns (its index
  is not safe to share); different collections proceed concurrently. Slow work (extraction,
  embedding) happens before the turn is taken.
- Writes are all or nothing: storage commits a document with all its chunks in one transaction,
  and the index follows only after that commit, with the stored chunk ids. Documents whose
  writes wait for the same collection's turn are committed together, in arrival order (one
  commit instead of one each: a replica ingesting many small documents at once spends its time
  embedding, not waiting on the disk); when that shared transaction refuses one of them, each
  is stored on its own, so one bad document never fails or delays another's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.knowledge_metrics import KnowledgeMetrics
from ml.knowledge.chunking import Chunk
from ml.knowledge.collections import CollectionCache, load_collection
from ml.knowledge.search import ChunkRecord, CollectionIndex, DocumentInfo
from storage.knowledge_store import DocumentWrite, KnowledgeStore, NewChunk, NewDocument
from storage.knowledge_uploads import KnowledgeUploads, Signature

Key = tuple[str, str]


@dataclass(frozen=True)
class PreparedDocument:
    """A document ready to store: what `NewDocument` says, its chunks and their vectors."""

    document: NewDocument
    chunks: Sequence[Chunk]
    vectors: np.ndarray


class KnowledgeLibrary:
    """The collections of one replica (see the module)."""

    def __init__(self, store: KnowledgeStore, uploads: KnowledgeUploads, *, max_bytes: int,
                 metrics: KnowledgeMetrics | None = None, replica: str = "",
                 **index_options: Any) -> None:
        self.store = store
        self.uploads = uploads
        self.metrics = metrics or KnowledgeMetrics()
        self.replica = replica
        self.index_options = index_options
        self.cache = CollectionCache(self._load, max_bytes=max_bytes)
        self.signatures: dict[Key, Signature] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._waiting: dict[Key, list[tuple[PreparedDocument,
                                            asyncio.Future[DocumentWrite]]]] = {}
        self._reason = "first_use"

    async def _load(self, tenant: str, name: str) -> CollectionIndex:
        signature = await self.uploads.content_signature(tenant, name)  # before: conservative
        index = await load_collection(self.store, tenant, name, **self.index_options)
        self.signatures[(tenant, name)] = signature
        self.metrics.collection_loaded(tenant, self._reason)
        return index

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _fresh(self, key: Key) -> Signature:
        """The stored signature, after dropping a held index that no longer matches it."""
        signature = await self.uploads.content_signature(*key)
        if key in self.cache and self.signatures.get(key) != signature:
            self.cache.invalidate(*key)
            self._reason = "stale"
        return signature

    @contextlib.asynccontextmanager
    async def reading(self, tenant: str, name: str) -> AsyncIterator[CollectionIndex]:
        """The current index of a collection, this replica's turn on it held while in use;
        `NotFound` when the tenant has no such collection."""
        key = (tenant, name)
        async with self._lock(key):
            await self._fresh(key)
            evicted = self.cache.evictions
            try:
                index = await self.cache.get(tenant, name)
            finally:
                self._reason = "first_use"
            self._after_change(evicted)
            yield index

    async def write(self, tenant: str, name: str, prepared: PreparedDocument) -> DocumentWrite:
        """Store a prepared document (replacing one of the same id or name) and bring a held
        index up to date. Documents that wait for the collection's turn together are stored
        together (`_write_waiting`)."""
        key = (tenant, name)
        written: asyncio.Future[DocumentWrite] = asyncio.get_running_loop().create_future()
        entry = (prepared, written)
        self._waiting.setdefault(key, []).append(entry)
        try:
            async with self._lock(key):
                if not written.done():
                    await _uncancelled(self._write_waiting(key))
        except BaseException:
            if entry in self._waiting.get(key, []):  # cancelled before anyone stored it
                self._waiting[key].remove(entry)
            # stored by another caller's turn, with nobody left to ask how it went
            written.add_done_callback(lambda done: done.cancelled() or done.exception())
            raise
        return await written

    async def _write_waiting(self, key: Key) -> None:
        """Store every document waiting for `key`'s turn in one transaction (one commit), in
        order of arrival; if that transaction refuses (one bad document), each is stored on its
        own, so each caller gets its own outcome. Called with the collection's turn held."""
        group = self._waiting.pop(key, [])
        if len(group) > 1:
            try:
                await self._store(key, group)
                return
            except Exception:  # stored nothing: try one at a time
                pass
        for entry in group:
            try:
                await self._store(key, [entry])
            except Exception as exc:
                if not entry[1].done():
                    entry[1].set_exception(exc)

    async def _store(self, key: Key,
                     group: list[tuple[PreparedDocument, asyncio.Future[DocumentWrite]]]
                     ) -> None:
        tenant, name = key
        documents = [(prepared.document,
                      [NewChunk(c.text, c.start, c.end, v.astype("<f4").tobytes())
                       for c, v in zip(prepared.chunks, prepared.vectors)])
                     for prepared, _ in group]
        held = key in self.cache  # nothing held, nothing to keep current: no signature read
        before = await self._fresh(key) if held else (0, 0)
        writes = await self.store.put_documents(tenant, name, documents)
        index = self.cache.peek(tenant, name)
        if index is not None:
            try:
                signature = before
                for (prepared, _), written in zip(group, writes):
                    stored = written.document
                    index.add_document(
                        DocumentInfo(stored.id, stored.name, stored.metadata),
                        [ChunkRecord(chunk_id, stored.id, c.ordinal, c.text, c.start, c.end)
                         for chunk_id, c in zip(written.chunk_ids, prepared.chunks)],
                        np.asarray(prepared.vectors, dtype=np.float32))
                    signature = _after(signature, written.removed_chunk_ids,
                                       written.chunk_ids)
                self.signatures[key] = signature
            except Exception:  # stored, but the index did not follow: rebuild it on next use
                self.cache.invalidate(tenant, name)
            evicted = self.cache.evictions
            self.cache.resized(tenant, name)
            self._after_change(evicted)
        for (_, future), written in zip(group, writes):
            self.metrics.ingested(tenant, 1, len(written.chunk_ids))
            if not future.done():
                future.set_result(written)

    async def delete_document(self, tenant: str, name: str, document_id: str) -> int:
        """Delete a document from storage and from a held index; how many chunks it had.
        `NotFound` when the collection has no such document."""
        key = (tenant, name)
        async with self._lock(key):
            before = await self._fresh(key)
            removed = await self.store.delete_document(tenant, name, document_id)
            index = self.cache.peek(tenant, name)
            if index is not None:
                index.remove_document(document_id)
                self.signatures[key] = _after(before, removed, [])
            self._after_change(self.cache.evictions)
        return len(removed)

    async def delete_collection(self, tenant: str, name: str) -> int:
        """Delete a whole collection; how many documents it had."""
        key = (tenant, name)
        async with self._lock(key):
            count = await self.store.delete_collection(tenant, name)
            self.cache.invalidate(tenant, name)
            self.signatures.pop(key, None)
            self._after_change(self.cache.evictions)
        return count

    def _after_change(self, evictions_before: int) -> None:
        for key in list(self.signatures):
            if key not in self.cache:
                del self.signatures[key]
        self.metrics.collections_evicted(self.cache.evictions - evictions_before)
        self.metrics.memory_held(self.replica, self.cache.memory_bytes(),
                                 len(self.cache.keys()))

    def status(self) -> dict[str, Any]:
        """What this replica holds: collections (tenant, name, chunks), memory, evictions."""
        return {"collections": [{"tenant": t, "collection": n,
                                 "chunks": len(self.cache.peek(t, n) or ())}
                                for t, n in self.cache.keys()],
                "memory_bytes": self.cache.memory_bytes(), "max_bytes": self.cache.max_bytes,
                "evictions": self.cache.evictions}


async def _uncancelled(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end even when the caller is cancelled meanwhile (then re-raise): a
    turn that stores other callers' documents must finish before the turn is given up."""
    turn = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            await asyncio.shield(turn)
            break
        except asyncio.CancelledError:
            cancelled = True
            if turn.done():
                break
    if cancelled:
        raise asyncio.CancelledError


def _after(before: Signature, removed: Sequence[int], added: Sequence[int]) -> Signature:
    """The signature a collection has after a write removed and added these chunk ids."""
    return (before[0] - len(removed) + len(added), before[1] - sum(removed) + sum(added))
