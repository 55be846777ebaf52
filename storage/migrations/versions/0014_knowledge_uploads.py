"""Knowledge uploads: the raw bytes of a document waiting to be ingested, staged in parts by the
API or the client before the `knowledge` agent's ingest task that names them.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "knowledge_uploads",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("upload_id", sa.String(64), primary_key=True),
        sa.Column("part", sa.Integer(), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_knowledge_uploads_tenant_created", "knowledge_uploads",
                    ["tenant", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_knowledge_uploads_tenant_created", table_name="knowledge_uploads")
    op.drop_table("knowledge_uploads")
