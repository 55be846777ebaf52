"""Knowledge collections: per-tenant collections, their documents, and the documents' chunks
with character offsets and embedding vectors (float32 bytes).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

JsonColumn = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)
EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "knowledge_collections",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_knowledge_collections_tenant_created", "knowledge_collections",
                    ["tenant", "created_at", "name"])
    op.create_table(
        "knowledge_documents",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("collection", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("media_type", sa.String(64), nullable=False),
        sa.Column("meta", JsonColumn, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("replaced_at", Timestamp, nullable=True),
    )
    op.create_index("ix_knowledge_documents_tenant_collection_name", "knowledge_documents",
                    ["tenant", "collection", "name"], unique=True)
    op.create_index("ix_knowledge_documents_tenant_collection_created", "knowledge_documents",
                    ["tenant", "collection", "created_at", "id"])
    op.create_table(
        "knowledge_chunks",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("document_id", sa.String(64), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("start_char", sa.Integer(), nullable=False),
        sa.Column("end_char", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sqlite_autoincrement=True,  # chunk ids are vector-index ids: never reuse one
    )
    op.create_index("ix_knowledge_chunks_document", "knowledge_chunks",
                    ["tenant", "collection", "document_id", "ordinal"], unique=True)
    op.create_index("ix_knowledge_chunks_collection_id", "knowledge_chunks",
                    ["tenant", "collection", "id"])


def downgrade() -> None:
    op.drop_index("ix_knowledge_chunks_collection_id", table_name="knowledge_chunks")
    op.drop_index("ix_knowledge_chunks_document", table_name="knowledge_chunks")
    op.drop_table("knowledge_chunks")
    op.drop_index("ix_knowledge_documents_tenant_collection_created",
                  table_name="knowledge_documents")
    op.drop_index("ix_knowledge_documents_tenant_collection_name",
                  table_name="knowledge_documents")
    op.drop_table("knowledge_documents")
    op.drop_index("ix_knowledge_collections_tenant_created", table_name="knowledge_collections")
    op.drop_table("knowledge_collections")
