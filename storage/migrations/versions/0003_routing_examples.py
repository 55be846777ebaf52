"""Routing examples the router learned from outcomes and feedback; an index for recent attempts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)
EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "routing_examples",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("agent_type", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_routing_examples_type_source", "routing_examples",
                    ["agent_type", "source", "id"])
    op.create_index("ix_task_attempts_started", "task_attempts", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_task_attempts_started", table_name="task_attempts")
    op.drop_index("ix_routing_examples_type_source", table_name="routing_examples")
    op.drop_table("routing_examples")
