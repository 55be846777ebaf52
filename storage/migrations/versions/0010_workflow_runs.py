"""Workflow runs and their steps: each run keeps the spec it started with, its input and its
status; each step row links the run to the task that executes it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JsonColumn = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workflow_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("spec", JsonColumn, nullable=False),
        sa.Column("input", JsonColumn, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("error", JsonColumn, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("deadline_at", Timestamp, nullable=True),
    )
    op.create_index("ix_workflow_runs_tenant_idempotency_key", "workflow_runs",
                    ["tenant", "idempotency_key"], unique=True)
    op.create_index("ix_workflow_runs_tenant_created", "workflow_runs",
                    ["tenant", "created_at", "id"])
    op.create_index("ix_workflow_runs_status_created", "workflow_runs",
                    ["status", "created_at", "id"])
    op.create_index("ix_workflow_runs_finished", "workflow_runs", ["finished_at"])
    op.create_table(
        "workflow_steps",
        sa.Column("run_id", sa.String(32),
                  sa.ForeignKey("workflow_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step_id", sa.String(128), primary_key=True),
        sa.Column("map_index", sa.Integer(), primary_key=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=True),
        sa.Column("output", JsonColumn, nullable=True),
        sa.Column("error", JsonColumn, nullable=True),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("decided_at", Timestamp, nullable=True),
        sa.Column("decision_comment", sa.Text(), nullable=True),
        sa.Column("wake_at", Timestamp, nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_index("ix_workflow_steps_wake", "workflow_steps", ["wake_at"])
    op.create_index("ix_workflow_steps_task", "workflow_steps", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_workflow_steps_task", table_name="workflow_steps")
    op.drop_index("ix_workflow_steps_wake", table_name="workflow_steps")
    op.drop_table("workflow_steps")
    op.drop_index("ix_workflow_runs_finished", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_status_created", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_tenant_created", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_tenant_idempotency_key", table_name="workflow_runs")
    op.drop_table("workflow_runs")
