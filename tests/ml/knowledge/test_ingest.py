"""Ingestion: a refused document stores nothing and leaves the index alone; a replaced document
leaves no old chunk in storage or in the index."""

from __future__ import annotations

import pytest

from ml.embeddings import Embedder
from ml.knowledge.chunking import Chunker
from ml.knowledge.ingest import ingest_document
from ml.knowledge.search import CollectionIndex
from storage.errors import InvalidRequest
from storage.knowledge_store import KnowledgeStore
from tests.ml.knowledge.test_documents import pdf_with_text


@pytest.mark.parametrize(("name", "content", "limit", "message"), [
    ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog", 10_000, "broken.pdf"),
    ("huge.md", b"# Huge\n\n" + b"word " * 400, 1000, "the limit is 1000"),
], ids=["corrupt-pdf", "oversized"])
async def test_a_refused_document_stores_nothing_and_leaves_the_index_alone(
    handbook: CollectionIndex, knowledge_store: KnowledgeStore, shared: Embedder,
    chunker: Chunker, name: str, content: bytes, limit: int, message: str,
) -> None:
    before = await knowledge_store.chunk_count("acme", "handbook")
    size = len(handbook)

    with pytest.raises(InvalidRequest, match=message):
        await ingest_document(knowledge_store, "acme", "handbook", name, content,
                              encode=shared.encode, chunker=chunker, index=handbook,
                              max_bytes=limit)

    assert await knowledge_store.chunk_count("acme", "handbook") == before
    assert len(handbook) == size and name.split(".")[0] not in handbook.documents
    with pytest.raises(InvalidRequest):
        await ingest_document(knowledge_store, "acme", "fresh", name, content,
                              encode=shared.encode, chunker=chunker, max_bytes=limit)
    assert (await knowledge_store.collections("acme"))[0][0].name == "handbook"
    assert len((await knowledge_store.collections("acme"))[0]) == 1


async def test_a_replaced_document_leaves_no_old_chunk_anywhere(
    handbook: CollectionIndex, knowledge_store: KnowledgeStore, shared: Embedder,
    chunker: Chunker,
) -> None:
    old_ids = set(handbook.vectors.chunks_of["shipping"])

    written = await ingest_document(
        knowledge_store, "acme", "handbook", "shipping.pdf",
        pdf_with_text("Shipping is now free for every order."), encode=shared.encode,
        chunker=chunker, index=handbook, document_id="shipping")

    assert written.replaced and set(written.removed_chunk_ids) == old_ids
    assert old_ids.isdisjoint(handbook.chunks)
    query = "how long does international delivery take?"
    hits = handbook.search(shared.encode([query])[0], query, k=10)
    assert all("International delivery" not in hit.text for hit in hits)
    assert handbook.documents["shipping"].name == "shipping.pdf"
    stored = await knowledge_store.document("acme", "handbook", "shipping")
    assert (stored.media_type, stored.chunk_count) == ("application/pdf", 1)
