"""Language-model gateway state: circuit breakers per deployment, token budgets per tenant with
their period counters and in-flight reservations, usage and cost per call, and the response
cache.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JsonColumn = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)
EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "llm_breakers",
        sa.Column("deployment", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", sa.Float(), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=True),
        sa.Column("probe_until", sa.Float(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "llm_budgets",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("limit_tokens", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "llm_budget_periods",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("period_key", sa.String(16), primary_key=True),
        sa.Column("limit_tokens", sa.BigInteger(), nullable=True),
        sa.Column("used_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reserved_tokens", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "llm_reservations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("period_key", sa.String(16), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
    )
    op.create_index("ix_llm_reservations_tenant_expires", "llm_reservations",
                    ["tenant", "expires_at"])
    op.create_index("ix_llm_reservations_expires", "llm_reservations", ["expires_at"])
    op.create_table(
        "llm_usage",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=True),
        sa.Column("deployment", sa.String(128), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=True),
    )
    op.create_index("ix_llm_usage_tenant_at", "llm_usage", ["tenant", "at"])
    op.create_index("ix_llm_usage_tenant_task", "llm_usage", ["tenant", "task_id"])
    op.create_table(
        "llm_cache",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", JsonColumn, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
    )
    op.create_index("ix_llm_cache_expires", "llm_cache", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_llm_cache_expires", table_name="llm_cache")
    op.drop_table("llm_cache")
    op.drop_index("ix_llm_usage_tenant_task", table_name="llm_usage")
    op.drop_index("ix_llm_usage_tenant_at", table_name="llm_usage")
    op.drop_table("llm_usage")
    op.drop_index("ix_llm_reservations_expires", table_name="llm_reservations")
    op.drop_index("ix_llm_reservations_tenant_expires", table_name="llm_reservations")
    op.drop_table("llm_reservations")
    op.drop_table("llm_budget_periods")
    op.drop_table("llm_budgets")
    op.drop_table("llm_breakers")
