"""Events going out: webhook subscriptions, the tenant's callback secret, the delivery outbox and
its attempts; a task's and a workflow run's `callback_url`; an index of a tenant's tasks by
creation time; inbox messages that start tasks and the replies to them.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)
Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("agent_type", sa.String(64), nullable=True),
        sa.Column("workflow", sa.String(128), nullable=True),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("previous_secret", sa.String(128), nullable=True),
        sa.Column("previous_secret_expires_at", Timestamp, nullable=True),
        sa.Column("secret_rotated_at", Timestamp, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_index("ix_webhook_subscriptions_tenant_enabled", "webhook_subscriptions",
                    ["tenant", "enabled"])
    op.create_table(
        "webhook_callback_secrets",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("previous_secret", sa.String(128), nullable=True),
        sa.Column("previous_secret_expires_at", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("seq", EventId, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(80), nullable=False, unique=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("subscription_id", sa.String(40), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("order_key", sa.String(80), nullable=False),
        sa.Column("event_kind", sa.String(40), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=True),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("payload", Json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("delivered_at", Timestamp, nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_webhook_deliveries_status_next", "webhook_deliveries",
                    ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_order_status", "webhook_deliveries",
                    ["order_key", "status", "seq"])
    op.create_index("ix_webhook_deliveries_tenant_seq", "webhook_deliveries", ["tenant", "seq"])
    op.create_index("ix_webhook_deliveries_task", "webhook_deliveries", ["task_id"])
    op.create_table(
        "webhook_attempts",
        sa.Column("delivery_seq", EventId, primary_key=True),
        sa.Column("number", sa.Integer(), primary_key=True),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
    )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
    # a tenant's tasks, newest first (the task list of the API and the console)
    op.create_index("ix_tasks_tenant_created", "tasks", ["tenant", "created_at", "id"])
    with op.batch_alter_table("workflow_runs") as batch:
        batch.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
    with op.batch_alter_table("agent_messages") as batch:
        batch.add_column(sa.Column("in_reply_to", sa.String(32), nullable=True))
        batch.add_column(sa.Column("started_task_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("replied_at", Timestamp, nullable=True))
    op.create_index("ix_agent_messages_recipient_unstarted", "agent_messages",
                    ["recipient", "acked_at", "started_task_id", "created_at"])
    op.create_index("ix_agent_messages_started_replied", "agent_messages",
                    ["started_task_id", "replied_at"])


def downgrade() -> None:
    op.drop_index("ix_agent_messages_started_replied", table_name="agent_messages")
    op.drop_index("ix_agent_messages_recipient_unstarted", table_name="agent_messages")
    with op.batch_alter_table("agent_messages") as batch:
        batch.drop_column("replied_at")
        batch.drop_column("started_task_id")
        batch.drop_column("in_reply_to")
    with op.batch_alter_table("workflow_runs") as batch:
        batch.drop_column("callback_url")
    op.drop_index("ix_tasks_tenant_created", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("callback_url")
    op.drop_table("webhook_attempts")
    for index in ("ix_webhook_deliveries_task", "ix_webhook_deliveries_tenant_seq",
                  "ix_webhook_deliveries_order_status", "ix_webhook_deliveries_status_next"):
        op.drop_index(index, table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_callback_secrets")
    op.drop_index("ix_webhook_subscriptions_tenant_enabled", table_name="webhook_subscriptions")
    op.drop_table("webhook_subscriptions")
