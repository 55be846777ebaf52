"""SQLAlchemy models of the knowledge collections: each tenant's collections, their documents,
the documents' chunks with their vectors, and staged uploads. Part of `storage.models` (which
imports this module and re-exports its names); kept apart only for size.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.model_base import Base, EventId, JsonColumn, Timestamp

# Knowledge collections: per-tenant documents, their chunks and the chunks' vectors (the source
# of truth; the vector and lexical indexes are rebuilt from these).
KNOWLEDGE_COLLECTIONS = "knowledge_collections"
KNOWLEDGE_DOCUMENTS = "knowledge_documents"
KNOWLEDGE_CHUNKS = "knowledge_chunks"


class KnowledgeCollectionRow(Base):
    """A tenant's named collection of documents; every vector in it has `dimension` floats."""

    __tablename__ = KNOWLEDGE_COLLECTIONS

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    dimension: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_knowledge_collections_tenant_created", "tenant", "created_at",
                            "name"),)


class KnowledgeDocumentRow(Base):
    """One document of a collection: its name (unique in the collection), media type, the
    caller's metadata, the SHA-256 and size of its content, when added and last replaced."""

    __tablename__ = KNOWLEDGE_DOCUMENTS

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    collection: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(64))
    meta: Mapped[Any] = mapped_column(JsonColumn)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    chunk_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    replaced_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        Index("ix_knowledge_documents_tenant_collection_name", "tenant", "collection", "name",
              unique=True),
        Index("ix_knowledge_documents_tenant_collection_created", "tenant", "collection",
              "created_at", "id"),
    )


class KnowledgeChunkRow(Base):
    """One chunk of a document: its text, its character offsets [start_char, end_char) in the
    document's extracted text, and its embedding as little-endian float32 bytes. `id` is the
    chunk's id in the vector index, never reused (on SQLite too: AUTOINCREMENT)."""

    __tablename__ = KNOWLEDGE_CHUNKS

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    collection: Mapped[str] = mapped_column(String(64))
    document_id: Mapped[str] = mapped_column(String(64))
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    start_char: Mapped[int] = mapped_column(Integer)
    end_char: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_knowledge_chunks_document", "tenant", "collection", "document_id", "ordinal",
              unique=True),
        Index("ix_knowledge_chunks_collection_id", "tenant", "collection", "id"),
        {"sqlite_autoincrement": True},
    )


knowledge_collections_table = cast(Table, KnowledgeCollectionRow.__table__)
knowledge_documents_table = cast(Table, KnowledgeDocumentRow.__table__)
knowledge_chunks_table = cast(Table, KnowledgeChunkRow.__table__)


KNOWLEDGE_UPLOADS = "knowledge_uploads"


class KnowledgeUploadRow(Base):
    """One part of a document's raw bytes, staged for the ingest task that names its upload."""

    __tablename__ = KNOWLEDGE_UPLOADS

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    upload_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_knowledge_uploads_tenant_created", "tenant", "created_at"),)


knowledge_uploads_table = cast(Table, KnowledgeUploadRow.__table__)
