"""Agent inboxes: messages posted to an agent type, kept until acknowledged.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JsonColumn = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agent_messages",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(64), nullable=True),
        sa.Column("task_id", sa.String(32), nullable=True),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("body", JsonColumn, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("acked_at", Timestamp, nullable=True),
    )
    op.create_index(
        "ix_agent_messages_recipient_acked_created",
        "agent_messages",
        ["recipient", "acked_at", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_agent_messages_recipient_acked_created", table_name="agent_messages")
    op.drop_table("agent_messages")
