"""Agent inboxes are read per tenant: their index leads with the tenant, so listing one
tenant's inbox never walks the messages other tenants left for the same agent type.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OLD = "ix_agent_messages_recipient_acked_created"
NEW = "ix_agent_messages_tenant_recipient_acked_created"


def upgrade() -> None:
    op.create_index(NEW, "agent_messages", ["tenant", "recipient", "acked_at", "created_at"])
    op.drop_index(OLD, table_name="agent_messages")


def downgrade() -> None:
    op.create_index(OLD, "agent_messages", ["recipient", "acked_at", "created_at"])
    op.drop_index(NEW, table_name="agent_messages")
