"""Stored knowledge: documents with their chunks in one transaction, replacement by id or name,
deletion, keyset listings, chunks streamed in pages, tenancy, bad input refused, migration."""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import AsyncIterator

import pytest
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from storage.database import _alembic_config, async_url, create_engine
from storage.errors import Conflict, InvalidRequest, NotFound
from storage.knowledge_store import KnowledgeStore, NewChunk, NewDocument, StoredChunk


@pytest.fixture
async def knowledge(database_url: str) -> AsyncIterator[KnowledgeStore]:
    async with await KnowledgeStore.open(database_url) as store:
        yield store


def _vector(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def _chunks(*texts: str, dimension: int = 3) -> list[NewChunk]:
    chunks, at = [], 0
    for number, text in enumerate(texts):
        chunks.append(NewChunk(text, at, at + len(text),
                               _vector(*[float(number + 1)] * dimension)))
        at += len(text) + 1
    return chunks


def _document(name: str, *, id: str | None = None, **metadata: object) -> NewDocument:
    return NewDocument(name=name, media_type="text/markdown",
                       sha256=hashlib.sha256(name.encode()).hexdigest(), size_bytes=100,
                       metadata=dict(metadata), id=id)


async def _all_chunks(store: KnowledgeStore, tenant: str, collection: str,
                      page_size: int = 1000) -> list[StoredChunk]:
    return [chunk async for page in store.chunk_pages(tenant, collection, page_size)
            for chunk in page]


async def test_a_document_and_its_chunks_are_stored_together(knowledge: KnowledgeStore) -> None:
    written = await knowledge.put_document(
        "acme", "handbook", _document("refunds.md", id="refunds", team="support"),
        _chunks("Refunds within 30 days.", "Cards take 5 days."))

    assert not written.replaced and written.removed_chunk_ids == []
    assert (written.document.id, written.document.chunk_count) == ("refunds", 2)
    assert written.document.metadata == {"team": "support"}
    chunks = await _all_chunks(knowledge, "acme", "handbook")
    assert [(c.id, c.ordinal, c.text, c.start, c.end) for c in chunks] == [
        (written.chunk_ids[0], 0, "Refunds within 30 days.", 0, 23),
        (written.chunk_ids[1], 1, "Cards take 5 days.", 24, 42)]
    assert struct.unpack("<3f", chunks[1].vector) == (2.0, 2.0, 2.0)
    assert (await knowledge.collection("acme", "handbook")).dimension == 3


async def test_the_same_name_replaces_the_document_and_all_its_old_chunks(
    knowledge: KnowledgeStore,
) -> None:
    first = await knowledge.put_document("acme", "handbook", _document("refunds.md"),
                                         _chunks("old one", "old two", "old three"))
    second = await knowledge.put_document("acme", "handbook", _document("refunds.md", v=2),
                                          _chunks("new one"))

    assert second.replaced and second.document.id == first.document.id
    assert second.removed_chunk_ids == first.chunk_ids
    assert second.document.replaced_at is not None
    assert second.document.created_at == first.document.created_at
    assert [c.text for c in await _all_chunks(knowledge, "acme", "handbook")] == ["new one"]
    assert set(second.chunk_ids).isdisjoint(first.chunk_ids), "chunk ids are never reused"
    [listed], _ = await knowledge.documents("acme", "handbook")
    assert (listed.metadata, listed.chunk_count) == ({"v": 2}, 1)


async def test_the_same_id_replaces_and_may_rename_but_not_onto_another_name(
    knowledge: KnowledgeStore,
) -> None:
    await knowledge.put_document("acme", "h", _document("a.md", id="a"), _chunks("alpha"))
    await knowledge.put_document("acme", "h", _document("b.md", id="b"), _chunks("beta"))

    renamed = await knowledge.put_document("acme", "h", _document("a2.md", id="a"),
                                           _chunks("alpha two"))
    assert renamed.replaced and renamed.document.name == "a2.md"
    with pytest.raises(Conflict, match="b.md"):
        await knowledge.put_document("acme", "h", _document("b.md", id="a"), _chunks("x"))
    assert sorted(c.text for c in await _all_chunks(knowledge, "acme", "h")) == [
        "alpha two", "beta"]


async def test_deleting_a_document_removes_its_chunks_and_only_its(
    knowledge: KnowledgeStore,
) -> None:
    kept = await knowledge.put_document("acme", "h", _document("keep.md"), _chunks("keep"))
    gone = await knowledge.put_document("acme", "h", _document("gone.md"),
                                        _chunks("gone 1", "gone 2"))

    assert await knowledge.delete_document("acme", "h", gone.document.id) == gone.chunk_ids

    assert [c.id for c in await _all_chunks(knowledge, "acme", "h")] == kept.chunk_ids
    with pytest.raises(NotFound):
        await knowledge.delete_document("acme", "h", gone.document.id)
    with pytest.raises(NotFound):
        await knowledge.document("acme", "h", gone.document.id)


async def test_another_tenant_never_sees_or_changes_a_collection_of_the_same_name(
    knowledge: KnowledgeStore,
) -> None:
    a = await knowledge.put_document("acme", "handbook", _document("refunds.md", id="r"),
                                     _chunks("acme refunds"))
    await knowledge.put_document("globex", "handbook", _document("refunds.md", id="r"),
                                 _chunks("globex refunds", "more"))

    assert [c.text for c in await _all_chunks(knowledge, "acme", "handbook")] == [
        "acme refunds"]
    assert await knowledge.chunk_count("globex", "handbook") == 2
    await knowledge.delete_document("globex", "handbook", "r")
    assert [c.id for c in await _all_chunks(knowledge, "acme", "handbook")] == a.chunk_ids
    assert [c.name for c in (await knowledge.collections("initech"))[0]] == []
    assert (await knowledge.documents("initech", "handbook"))[0] == []
    with pytest.raises(NotFound):
        await knowledge.delete_collection("initech", "handbook")
    await knowledge.delete_collection("globex", "handbook")
    assert await knowledge.chunk_count("acme", "handbook") == 1


async def test_listings_come_in_keyset_pages(knowledge: KnowledgeStore) -> None:
    for number in range(5):
        await knowledge.put_document("acme", f"c{number}", _document("d.md"), _chunks("x"))
        await knowledge.put_document("acme", "many", _document(f"d{number}.md"), _chunks("y"))

    names, cursor = [], None
    while True:
        page, cursor = await knowledge.collections("acme", limit=2, cursor=cursor)
        names += [collection.name for collection in page]
        if cursor is None:
            break
    assert names == ["c0", "many", "c1", "c2", "c3", "c4"]
    documents, cursor = await knowledge.documents("acme", "many", limit=3)
    rest, last = await knowledge.documents("acme", "many", limit=3, cursor=cursor)
    assert [d.name for d in documents + rest] == [f"d{n}.md" for n in range(5)]
    assert last is None
    with pytest.raises(InvalidRequest, match="cursor"):
        await knowledge.documents("acme", "many", cursor="nonsense")


async def test_chunks_stream_in_pages_in_id_order(knowledge: KnowledgeStore) -> None:
    written = [await knowledge.put_document("acme", "h", _document(f"{n}.md"),
                                            _chunks(*[f"t{n}.{i}" for i in range(3)]))
               for n in range(4)]
    pages = [page async for page in knowledge.chunk_pages("acme", "h", page_size=5)]

    assert [len(page) for page in pages] == [5, 5, 2]
    assert [c.id for page in pages for c in page] == [i for w in written for i in w.chunk_ids]


async def test_deleting_a_collection_removes_everything_in_it(knowledge: KnowledgeStore) -> None:
    await knowledge.put_document("acme", "h", _document("a.md"), _chunks("a", "b"))
    await knowledge.put_document("acme", "h", _document("b.md"), _chunks("c"))

    assert await knowledge.delete_collection("acme", "h") == 2

    assert await knowledge.chunk_count("acme", "h") == 0
    assert (await knowledge.collections("acme"))[0] == []
    with pytest.raises(NotFound):
        await knowledge.collection("acme", "h")


@pytest.mark.parametrize(("tenant", "collection", "document", "chunks", "message"), [
    ("acme", "bad name!", _document("a.md"), _chunks("x"), "collection"),
    ("", "h", _document("a.md"), _chunks("x"), "tenant"),
    ("acme", "h", _document("a.md", id="../etc"), _chunks("x"), "document_id"),
    ("acme", "h", _document("a.md"), [], "no chunks"),
    ("acme", "h", _document("a.md"), [NewChunk("x", 0, 1, b"\x00" * 5)], "float32"),
    ("acme", "h", _document("a.md"), _chunks("x") + _chunks("y", dimension=4), "one non-zero"),
    ("acme", "h", _document("a.md"), [NewChunk("x", 3, 1, _vector(1.0))], "offsets"),
    ("acme", "h", _document("a.md", blob=object()), _chunks("x"), "not JSON"),
], ids=["collection", "tenant", "document-id", "no-chunks", "vector-bytes", "mixed-dimensions",
        "offsets", "metadata"])
async def test_bad_input_is_refused_and_stores_nothing(
    knowledge: KnowledgeStore, tenant: str, collection: str, document: NewDocument,
    chunks: list[NewChunk], message: str,
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await knowledge.put_document(tenant, collection, document, chunks)
    assert (await knowledge.collections("acme"))[0] == []


async def test_a_collection_keeps_the_dimension_of_its_first_vectors(
    knowledge: KnowledgeStore,
) -> None:
    await knowledge.put_document("acme", "h", _document("a.md"), _chunks("a", dimension=3))
    with pytest.raises(InvalidRequest, match="3 dimensions, not 4"):
        await knowledge.put_document("acme", "h", _document("b.md"), _chunks("b", dimension=4))
    assert [d.name for d in (await knowledge.documents("acme", "h"))[0]] == ["a.md"]


async def test_0013_adds_the_knowledge_tables_and_goes_down_again(
    empty_database_url: str,
) -> None:
    def tables(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    async def current_tables() -> set[str]:
        engine = create_engine(empty_database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(tables)
        finally:
            await engine.dispose()

    config = _alembic_config(async_url(empty_database_url))
    await asyncio.to_thread(command.upgrade, config, "0012")
    before = await current_tables()
    await asyncio.to_thread(command.upgrade, config, "0013")
    assert await current_tables() == before | {
        "knowledge_collections", "knowledge_documents", "knowledge_chunks"}
    await asyncio.to_thread(command.downgrade, config, "0012")
    assert await current_tables() == before


async def test_several_documents_in_one_transaction_are_stored_all_or_none(
        knowledge: KnowledgeStore) -> None:
    await knowledge.put_document("acme", "handbook", _document("taken.md", id="taken"),
                                 _chunks("Taken."))
    with pytest.raises(Conflict):
        await knowledge.put_documents("acme", "handbook", [
            (_document("fresh.md", id="fresh"), _chunks("Fresh one.", "Fresh two.")),
            (_document("taken.md", id="other"), _chunks("Clash."))])
    assert [d.id for d in await knowledge.all_documents("acme", "handbook")] == ["taken"]

    writes = await knowledge.put_documents("acme", "handbook", [
        (_document("a.md", id="a"), _chunks("A one.", "A two.", "A three.")),
        (_document("taken.md", id="taken"), _chunks("Taken again.")),
        (_document("a.md", id="a"), _chunks("A replaced."))])
    assert [w.replaced for w in writes] == [False, True, True]
    assert writes[2].removed_chunk_ids == writes[0].chunk_ids
    chunks = {c.id: c for c in await _all_chunks(knowledge, "acme", "handbook")}
    assert sorted(chunks) == sorted(writes[1].chunk_ids + writes[2].chunk_ids)
    assert [chunks[i].text for i in writes[1].chunk_ids + writes[2].chunk_ids] == [
        "Taken again.", "A replaced."]
