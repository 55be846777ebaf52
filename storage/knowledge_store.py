"""Knowledge collections as stored: a tenant's collections, their documents, and each document's
chunks with character offsets and embedding vectors. This is the source of truth; the vector
and lexical indexes are caches rebuilt from it.

Guarantees:
- Every read and write names the tenant and the collection: nothing here returns, changes or
  counts another tenant's collections, documents or chunks, even under the same names.
- `put_document` stores a document and all its chunks in one transaction. A document with the
  same id, or (when no id is given) the same name, is replaced: its old chunks are deleted in
  that same transaction, so a reader sees the old chunks or the new ones, never both or none.
  The result names the chunk ids removed and added, so an index can follow incrementally.
  `put_documents` does the same for several documents, in order, in one transaction: all of
  them or none.
- A collection is created by its first document and fixes the vector dimension of all its
  chunks; a chunk of another dimension is `InvalidRequest` and nothing is stored.
- Chunk ids grow with every write and are never reused, so an index rebuilt from
  `chunk_pages` gives each chunk the id it had before.
- Bad input (names, offsets, vectors, metadata) is `InvalidRequest` before anything is written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.cursor import decode_cursor, encode_cursor
from storage.database import EngineStore
from storage.errors import Conflict, InvalidRequest, NotFound
from storage.messages import as_utc, utcnow
from storage.models import (
    knowledge_chunks_table, knowledge_collections_table, knowledge_documents_table,
)

MAX_TENANT_CHARS = 64
MAX_COLLECTION_CHARS = 64
MAX_DOCUMENT_ID_CHARS = 64
MAX_DOCUMENT_NAME_CHARS = 255
MAX_MEDIA_TYPE_CHARS = 64
MAX_METADATA_BYTES = 16_384
MAX_PAGE = 1000
CHUNK_PAGE = 1000
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")


@dataclass(frozen=True)
class NewChunk:
    """A chunk to store: its text, offsets [start, end) in the document's text, and its vector
    as little-endian float32 bytes."""

    text: str
    start: int
    end: int
    vector: bytes


@dataclass(frozen=True)
class NewDocument:
    """A document to store. Without `id`, a document of the same `name` is replaced (keeping
    its id), or a new id is made."""

    name: str
    media_type: str
    sha256: str
    size_bytes: int
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class StoredCollection:
    tenant: str
    name: str
    dimension: int
    created_at: datetime


@dataclass(frozen=True)
class StoredDocument:
    tenant: str
    collection: str
    id: str
    name: str
    media_type: str
    metadata: dict[str, Any]
    sha256: str
    size_bytes: int
    chunk_count: int
    created_at: datetime
    replaced_at: datetime | None


@dataclass(frozen=True)
class StoredChunk:
    """A stored chunk; `id` is its id in the collection's vector index."""

    id: int
    document_id: str
    ordinal: int
    text: str
    start: int
    end: int
    vector: bytes


@dataclass(frozen=True)
class DocumentWrite:
    """What `put_document` did: the document as stored, the ids of the chunks it replaced
    (empty for a new document) and of the chunks it added, in order."""

    document: StoredDocument
    replaced: bool
    removed_chunk_ids: list[int]
    chunk_ids: list[int]


def check_name(value: object, what: str, limit: int) -> str:
    """`value` if it is 1 to `limit` letters, digits or `._:-`; `InvalidRequest` otherwise."""
    if (not isinstance(value, str) or not 1 <= len(value) <= limit
            or not set(value) <= _NAME_CHARS):
        raise InvalidRequest(f"{what} must be 1 to {limit} letters, digits or '._:-', "
                             f"not {value!r}", {"field": what})
    return value


def _check_document(document: NewDocument, chunks: Sequence[NewChunk]) -> int:
    """The vector dimension of `chunks`, after checking the document and its chunks."""
    if document.id is not None:
        check_name(document.id, "document_id", MAX_DOCUMENT_ID_CHARS)
    if not document.name or len(document.name) > MAX_DOCUMENT_NAME_CHARS:
        raise InvalidRequest(f"a document name must be 1 to {MAX_DOCUMENT_NAME_CHARS} "
                             "characters", {"field": "name"})
    if not document.media_type or len(document.media_type) > MAX_MEDIA_TYPE_CHARS:
        raise InvalidRequest("a document needs a media type", {"field": "media_type"})
    if len(document.sha256) != 64 or document.size_bytes < 0:
        raise InvalidRequest("a document needs the hex SHA-256 and size of its content",
                             {"field": "sha256"})
    if not isinstance(document.metadata, dict):
        raise InvalidRequest("document metadata must be a JSON object", {"field": "metadata"})
    try:
        encoded = json.dumps(document.metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"document metadata is not JSON: {exc}",
                             {"field": "metadata"}) from exc
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise InvalidRequest(f"document metadata is over {MAX_METADATA_BYTES} bytes",
                             {"field": "metadata"})
    if not chunks:
        raise InvalidRequest(f"document {document.name!r} has no chunks to store",
                             {"document": document.name})
    sizes = {len(chunk.vector) for chunk in chunks}
    if len(sizes) != 1 or (size := sizes.pop()) == 0 or size % 4:
        raise InvalidRequest(f"the chunks of {document.name!r} must all have float32 vectors "
                             "of one non-zero dimension", {"document": document.name})
    for chunk in chunks:
        if not 0 <= chunk.start <= chunk.end or not chunk.text:
            raise InvalidRequest(f"a chunk of {document.name!r} has no text or bad offsets "
                                 f"[{chunk.start}, {chunk.end})", {"document": document.name})
    return size // 4


def _document(row: Any) -> StoredDocument:
    return StoredDocument(
        row.tenant, row.collection, row.id, row.name, row.media_type, dict(row.meta or {}),
        row.sha256, int(row.size_bytes), int(row.chunk_count), as_utc(row.created_at),
        as_utc(row.replaced_at) if row.replaced_at is not None else None)


def _chunk(row: Any) -> StoredChunk:
    return StoredChunk(int(row.id), row.document_id, int(row.ordinal), row.text,
                       int(row.start_char), int(row.end_char), bytes(row.vector))


def _check_page(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}, not {limit}",
                             {"field": "limit"})


class KnowledgeStore(EngineStore):
    """Async access to stored knowledge collections over one engine."""

    async def put_document(self, tenant: str, collection: str, document: NewDocument,
                           chunks: Sequence[NewChunk]) -> DocumentWrite:
        """Store `document` with `chunks` (in order) in one transaction, creating the collection
        on its first document and replacing a document of the same id (or name); see the
        module's guarantees. `Conflict` when the name belongs to another document."""
        (written,) = await self.put_documents(tenant, collection, [(document, chunks)])
        return written

    async def put_documents(self, tenant: str, collection: str,
                            documents: Sequence[tuple[NewDocument, Sequence[NewChunk]]]
                            ) -> list[DocumentWrite]:
        """`put_document` for several documents, in order, in one transaction (one commit for
        them all): every one is stored, or none (the first refusal is raised)."""
        check_name(tenant, "tenant", MAX_TENANT_CHARS)
        check_name(collection, "collection", MAX_COLLECTION_CHARS)
        dimensions = [_check_document(document, chunks) for document, chunks in documents]
        now = utcnow()
        conflict = Conflict(f"document name {documents[0][0].name!r} is taken in collection "
                            f"{collection!r}", {"name": documents[0][0].name}) \
            if len(documents) == 1 else Conflict(
                f"a document name is taken in collection {collection!r}", {})
        async with self._transaction("storing a knowledge document", conflict) as connection:
            return [await self._put(connection, tenant, collection, document, chunks,
                                    dimension, now)
                    for (document, chunks), dimension in zip(documents, dimensions)]

    async def _put(self, connection: AsyncConnection, tenant: str, collection: str,
                   document: NewDocument, chunks: Sequence[NewChunk], dimension: int,
                   now: datetime) -> DocumentWrite:
        docs, chunk_table = knowledge_documents_table, knowledge_chunks_table
        conflict = Conflict(f"document name {document.name!r} is taken in collection "
                            f"{collection!r}", {"name": document.name})
        await self._ensure_collection(connection, tenant, collection, dimension, now)
        key = and_(docs.c.tenant == tenant, docs.c.collection == collection)
        by = (docs.c.id == document.id) if document.id else (docs.c.name == document.name)
        old = (await connection.execute(select(docs).where(key, by))).first()
        if old is not None and document.id and old.name != document.name:
            taken = (await connection.execute(select(docs.c.id).where(
                key, docs.c.name == document.name))).first()
            if taken is not None:
                raise conflict
        document_id = old.id if old is not None else (document.id or uuid.uuid4().hex)
        removed: list[int] = []
        row = {"name": document.name, "media_type": document.media_type,
               "meta": document.metadata, "sha256": document.sha256,
               "size_bytes": document.size_bytes, "chunk_count": len(chunks)}
        chunk_key = and_(chunk_table.c.tenant == tenant,
                         chunk_table.c.collection == collection,
                         chunk_table.c.document_id == document_id)
        if old is not None:
            removed = [int(i) for i in (await connection.execute(
                select(chunk_table.c.id).where(chunk_key).order_by(chunk_table.c.id)
            )).scalars()]
            await connection.execute(delete(chunk_table).where(chunk_key))
            await connection.execute(update(docs).where(key, docs.c.id == document_id)
                                     .values(replaced_at=now, **row))
            created_at, replaced_at = as_utc(old.created_at), as_utc(now)
        else:
            await connection.execute(insert(docs).values(
                tenant=tenant, collection=collection, id=document_id, created_at=now,
                replaced_at=None, **row))
            created_at, replaced_at = as_utc(now), None
        # every chunk in one statement, then their ids in one read (by ordinal, unique)
        await connection.execute(insert(chunk_table), [
            {"tenant": tenant, "collection": collection, "document_id": document_id,
             "ordinal": ordinal, "text": chunk.text, "start_char": chunk.start,
             "end_char": chunk.end, "vector": chunk.vector}
            for ordinal, chunk in enumerate(chunks)])
        chunk_ids = [int(i) for i in (await connection.execute(
            select(chunk_table.c.id).where(chunk_key).order_by(chunk_table.c.ordinal)
        )).scalars()]
        stored = StoredDocument(tenant, collection, document_id, document.name,
                                document.media_type, json.loads(json.dumps(document.metadata)),
                                document.sha256,
                                document.size_bytes, len(chunks), created_at, replaced_at)
        return DocumentWrite(stored, old is not None, removed, chunk_ids)

    async def _ensure_collection(self, connection: AsyncConnection, tenant: str,
                                 collection: str, dimension: int, now: datetime) -> None:
        table = knowledge_collections_table
        key = and_(table.c.tenant == tenant, table.c.name == collection)
        found = (await connection.execute(select(table.c.dimension).where(key))).first()
        if found is None:
            await connection.execute(insert(table).values(
                tenant=tenant, name=collection, dimension=dimension, created_at=now))
        elif found.dimension != dimension:
            raise InvalidRequest(
                f"collection {collection!r} holds vectors of {found.dimension} dimensions, "
                f"not {dimension}", {"collection": collection, "dimension": found.dimension})

    async def delete_document(self, tenant: str, collection: str,
                              document_id: str) -> list[int]:
        """Delete a document and its chunks in one transaction; the removed chunk ids.
        `NotFound` when the collection has no such document."""
        docs, chunk_table = knowledge_documents_table, knowledge_chunks_table
        async with self._transaction("deleting a knowledge document") as connection:
            deleted = await connection.execute(delete(docs).where(
                docs.c.tenant == tenant, docs.c.collection == collection,
                docs.c.id == document_id))
            if deleted.rowcount == 0:
                raise NotFound(f"collection {collection!r} has no document {document_id!r}",
                               {"collection": collection, "document_id": document_id})
            chunk_key = and_(chunk_table.c.tenant == tenant,
                             chunk_table.c.collection == collection,
                             chunk_table.c.document_id == document_id)
            removed = [int(i) for i in (await connection.execute(
                select(chunk_table.c.id).where(chunk_key).order_by(chunk_table.c.id)
            )).scalars()]
            await connection.execute(delete(chunk_table).where(chunk_key))
        return removed

    async def delete_collection(self, tenant: str, collection: str) -> int:
        """Delete a collection with all its documents and chunks; how many documents it had.
        `NotFound` when the tenant has no such collection."""
        tables = (knowledge_chunks_table, knowledge_documents_table)
        collections = knowledge_collections_table
        async with self._transaction("deleting a knowledge collection") as connection:
            gone = await connection.execute(delete(collections).where(
                collections.c.tenant == tenant, collections.c.name == collection))
            if gone.rowcount == 0:
                raise NotFound(f"there is no collection {collection!r}",
                               {"collection": collection})
            counts = [(await connection.execute(delete(table).where(
                table.c.tenant == tenant, table.c.collection == collection))).rowcount
                for table in tables]
        return int(counts[1])

    async def collection(self, tenant: str, collection: str) -> StoredCollection:
        """One collection of `tenant`; `NotFound` when it has none of that name."""
        table = knowledge_collections_table
        rows = await self._fetch(select(table).where(table.c.tenant == tenant,
                                                     table.c.name == collection))
        if not rows:
            raise NotFound(f"there is no collection {collection!r}", {"collection": collection})
        row = rows[0]
        return StoredCollection(row.tenant, row.name, int(row.dimension), as_utc(row.created_at))

    async def collections(self, tenant: str, *, limit: int = 100, cursor: str | None = None
                          ) -> tuple[list[StoredCollection], str | None]:
        """`tenant`'s collections, oldest first, `limit` at a time, and the next page's
        cursor (None on the last page)."""
        _check_page(limit)
        table = knowledge_collections_table
        query = select(table).where(table.c.tenant == tenant)
        if cursor:
            created, name = decode_cursor(cursor, "this collection listing")
            query = query.where(or_(table.c.created_at > created,
                                    and_(table.c.created_at == created, table.c.name > name)))
        rows = await self._fetch(query.order_by(table.c.created_at, table.c.name)
                                 .limit(limit + 1))
        found = [StoredCollection(r.tenant, r.name, int(r.dimension), as_utc(r.created_at))
                 for r in rows[:limit]]
        last = found[-1] if len(rows) > limit else None
        return found, encode_cursor(last.created_at, last.name) if last else None

    async def documents(self, tenant: str, collection: str, *, limit: int = 100,
                        cursor: str | None = None) -> tuple[list[StoredDocument], str | None]:
        """A collection's documents, oldest first, `limit` at a time, and the next page's
        cursor (None on the last page). An unknown collection has no documents."""
        _check_page(limit)
        table = knowledge_documents_table
        query = select(table).where(table.c.tenant == tenant, table.c.collection == collection)
        if cursor:
            created, document_id = decode_cursor(cursor, "this document listing")
            query = query.where(or_(table.c.created_at > created,
                                    and_(table.c.created_at == created,
                                         table.c.id > document_id)))
        rows = await self._fetch(query.order_by(table.c.created_at, table.c.id)
                                 .limit(limit + 1))
        found = [_document(row) for row in rows[:limit]]
        last = found[-1] if len(rows) > limit else None
        return found, encode_cursor(last.created_at, last.id) if last else None

    async def document(self, tenant: str, collection: str, document_id: str) -> StoredDocument:
        """One document; `NotFound` when the collection has no such document."""
        table = knowledge_documents_table
        rows = await self._fetch(select(table).where(
            table.c.tenant == tenant, table.c.collection == collection,
            table.c.id == document_id))
        if not rows:
            raise NotFound(f"collection {collection!r} has no document {document_id!r}",
                           {"collection": collection, "document_id": document_id})
        return _document(rows[0])

    async def all_documents(self, tenant: str, collection: str) -> list[StoredDocument]:
        """Every document of a collection (what an index needs to filter by metadata)."""
        table = knowledge_documents_table
        rows = await self._fetch(select(table).where(
            table.c.tenant == tenant, table.c.collection == collection).order_by(table.c.id))
        return [_document(row) for row in rows]

    async def chunk_count(self, tenant: str, collection: str) -> int:
        table = knowledge_chunks_table
        rows = await self._fetch(select(func.count()).select_from(table).where(
            table.c.tenant == tenant, table.c.collection == collection))
        return int(rows[0][0])

    async def chunk_pages(self, tenant: str, collection: str, page_size: int = CHUNK_PAGE
                          ) -> AsyncIterator[list[StoredChunk]]:
        """Every chunk of a collection with its vector, in id order, `page_size` at a time
        (each page one read, keyed by the last id): memory stays bounded by a page. Writes
        between pages are seen only from the next page on, so the caller rebuilding an index
        keeps writes to the collection out until it is done."""
        if page_size < 1:
            raise InvalidRequest("page_size must be at least 1", {"field": "page_size"})
        table = knowledge_chunks_table
        after = -1
        while True:
            rows = await self._fetch(select(table).where(
                table.c.tenant == tenant, table.c.collection == collection,
                table.c.id > after).order_by(table.c.id).limit(page_size))
            if not rows:
                return
            page = [_chunk(row) for row in rows]
            yield page
            if len(rows) < page_size:
                return
            after = page[-1].id
