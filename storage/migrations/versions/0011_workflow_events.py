"""Workflow run events (the resumable stream of a run) and a run's generation (bumped by each
retry from a step, so the retried steps' tasks get fresh idempotency keys).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JsonColumn = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)
EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("workflow_runs") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False,
                                   server_default="0"))
    op.create_table(
        "workflow_events",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32),
                  sa.ForeignKey("workflow_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("step_id", sa.String(128), nullable=True),
        sa.Column("map_index", sa.Integer(), nullable=True),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("data", JsonColumn, nullable=True),
    )
    op.create_index("ix_workflow_events_run", "workflow_events", ["run_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_workflow_events_run", table_name="workflow_events")
    op.drop_table("workflow_events")
    with op.batch_alter_table("workflow_runs") as batch:
        batch.drop_column("generation")
