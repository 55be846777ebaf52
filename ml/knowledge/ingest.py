"""Ingesting one document into a tenant's collection: extract its text, split it into chunks,
embed them, store them, and bring a loaded index up to date.

Guarantees of `ingest_document`:
- Everything that can refuse the document (type, size, a corrupt or encrypted PDF, no text)
  happens before anything is written: a refused document stores nothing and changes no index.
- The document and all its chunks are stored in one transaction (`KnowledgeStore.put_document`),
  replacing a document of the same id or name; only then is `index` (when given, the loaded
  `CollectionIndex` of that tenant and collection) updated, with the stored chunk ids, so the
  index never holds a chunk that storage does not.
- Chunk vectors are the shared encoder's unit vectors of the chunk texts, stored as float32.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ml.knowledge.chunking import Chunker
from ml.knowledge.documents import DEFAULT_MAX_BYTES, DEFAULT_MAX_CHARS, extract
from ml.knowledge.search import ChunkRecord, CollectionIndex, DocumentInfo
from storage.knowledge_store import DocumentWrite, KnowledgeStore, NewChunk, NewDocument

Encode = Callable[[Sequence[str]], np.ndarray]


async def ingest_document(
    store: KnowledgeStore, tenant: str, collection: str, name: str, content: bytes, *,
    encode: Encode, chunker: Chunker, media_type: str | None = None,
    metadata: Mapping[str, Any] | None = None, document_id: str | None = None,
    index: CollectionIndex | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> DocumentWrite:
    """Store the document `name` (bytes `content`) in `tenant`'s `collection`; see the
    module's guarantees. `encode` may be slow: it runs in a worker thread."""
    if index is not None and index.key != (tenant, collection):
        raise ValueError(f"index {index.key} is not collection {(tenant, collection)}")
    extracted = extract(name, content, media_type, max_bytes=max_bytes, max_chars=max_chars)
    chunks = chunker.split(extracted.text)
    vectors = np.asarray(await asyncio.to_thread(encode, [c.text for c in chunks]),
                         dtype=np.float32)
    written = await store.put_document(
        tenant, collection,
        NewDocument(name=name, media_type=extracted.media_type, sha256=extracted.sha256,
                    size_bytes=extracted.size_bytes, metadata=dict(metadata or {}),
                    id=document_id),
        [NewChunk(c.text, c.start, c.end, vector.astype("<f4").tobytes())
         for c, vector in zip(chunks, vectors)])
    if index is not None:
        stored = written.document
        index.add_document(
            DocumentInfo(stored.id, stored.name, stored.metadata),
            [ChunkRecord(chunk_id, stored.id, c.ordinal, c.text, c.start, c.end)
             for chunk_id, c in zip(written.chunk_ids, chunks)],
            vectors)
    return written
