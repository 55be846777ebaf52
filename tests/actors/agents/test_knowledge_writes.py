"""Concurrent writes to one collection through a replica's `KnowledgeLibrary`: they share a
commit, each caller still gets its own outcome (a refused document fails alone), the held index
follows every one of them, and a cancelled caller never strands the others. A real SQLite store
and unit vectors made up for the test (no model)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actors.knowledge_library import KnowledgeLibrary, PreparedDocument
from ml.knowledge.chunking import Chunk
from storage.database import migrate_async
from storage.errors import Conflict
from storage.knowledge_store import KnowledgeStore, NewDocument
from storage.knowledge_uploads import KnowledgeUploads

DIMENSION = 8


def prepared(name: str, *texts: str, document_id: str | None = None) -> PreparedDocument:
    chunks, at = [], 0
    for ordinal, text in enumerate(texts):
        chunks.append(Chunk(ordinal, text, at, at + len(text), len(text.split())))
        at += len(text) + 1
    seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    vectors = np.random.default_rng(seed).normal(size=(len(texts), DIMENSION))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    document = NewDocument(name=name, media_type="text/plain",
                           sha256=hashlib.sha256(name.encode()).hexdigest(),
                           size_bytes=at, id=document_id or name.split(".")[0])
    return PreparedDocument(document, chunks, vectors)


class CountingStore(KnowledgeStore):
    """A store that counts its transactions of documents and can hold them back."""

    commits = 0
    gate: asyncio.Event | None = None

    async def put_documents(self, *args: Any, **kwargs: Any) -> Any:
        if self.gate is not None:
            await self.gate.wait()
        written = await super().put_documents(*args, **kwargs)
        type(self).commits += 1
        return written


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[KnowledgeLibrary]:
    url = f"sqlite:///{tmp_path / 'knowledge.db'}"
    await migrate_async(url)
    CountingStore.commits, CountingStore.gate = 0, None
    store = await CountingStore.open(url)
    yield KnowledgeLibrary(store, KnowledgeUploads(store.engine), max_bytes=2**30)
    await store.engine.dispose()


async def test_concurrent_writes_share_commits_and_each_caller_gets_its_own_document(
        library: KnowledgeLibrary):
    await library.write("acme", "handbook", prepared("first.txt", "the first document"))
    async with library.reading("acme", "handbook") as index:  # held: writes must follow
        assert len(index) == 1
    CountingStore.commits = 0

    names = [f"doc{n}.txt" for n in range(12)]
    written = await asyncio.gather(*(
        library.write("acme", "handbook", prepared(name, f"{name} part one", f"{name} two"))
        for name in names))

    assert [w.document.name for w in written] == names
    assert CountingStore.commits < len(names)  # grouped: fewer commits than documents
    stored = await _stored_texts(library.store)
    for name, write in zip(names, written):
        assert [stored[i] for i in write.chunk_ids] == [f"{name} part one", f"{name} two"]
    async with library.reading("acme", "handbook") as index:
        assert len(index) == 1 + 2 * len(names)
        assert sorted(index.chunks) == sorted(stored)


async def test_a_refused_document_among_concurrent_writes_fails_alone(
        library: KnowledgeLibrary):
    await library.write("acme", "handbook", prepared("taken.txt", "taken", document_id="one"))
    outcomes = await asyncio.gather(
        library.write("acme", "handbook", prepared("a.txt", "first")),
        library.write("acme", "handbook", prepared("b.txt", "second")),
        library.write("acme", "handbook", prepared("taken.txt", "clash", document_id="two")),
        library.write("acme", "handbook", prepared("c.txt", "third")),
        return_exceptions=True)

    assert isinstance(outcomes[2], Conflict)
    assert [o.document.name for o in outcomes if not isinstance(o, BaseException)] == [
        "a.txt", "b.txt", "c.txt"]
    documents = await library.store.all_documents("acme", "handbook")
    assert sorted(d.id for d in documents) == ["a", "b", "c", "one"]


async def test_a_cancelled_caller_never_strands_the_documents_of_its_turn(
        library: KnowledgeLibrary):
    first_gate = CountingStore.gate = asyncio.Event()
    leader = asyncio.create_task(library.write("acme", "handbook", prepared("a.txt", "a")))
    await asyncio.sleep(0.01)  # the leader holds the turn, held back in the store
    b, c, d = (asyncio.create_task(library.write("acme", "handbook", prepared(name, name)))
               for name in ("b.txt", "c.txt", "d.txt"))
    await asyncio.sleep(0.01)
    c.cancel()  # still waiting for the turn: it is never stored
    second_gate = CountingStore.gate = asyncio.Event()
    first_gate.set()
    assert (await leader).document.name == "a.txt"

    await asyncio.sleep(0.01)  # b's turn, storing b and d together, is held back in the store
    b.cancel()
    await asyncio.sleep(0.01)
    assert not d.done()
    second_gate.set()
    with pytest.raises(asyncio.CancelledError):
        await b
    done = await asyncio.wait_for(d, 5)  # b's turn was finished, for d
    assert done.document.name == "d.txt"
    with pytest.raises(asyncio.CancelledError):
        await c
    names = sorted(d.name for d in await library.store.all_documents("acme", "handbook"))
    assert names == ["a.txt", "b.txt", "d.txt"]


async def _stored_texts(store: KnowledgeStore) -> dict[int, str]:
    return {chunk.id: chunk.text async for page in store.chunk_pages("acme", "handbook")
            for chunk in page}
