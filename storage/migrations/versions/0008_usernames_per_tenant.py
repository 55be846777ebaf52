"""Usernames are unique within a tenant, not across tenants: logins name their tenant.

Every existing username was unique across all tenants, so it stays unique within its own.
Downgrading restores the global index and fails if two tenants have since taken one name.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_username")
        batch.create_index("ix_users_tenant_username", ["tenant", "username"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_tenant_username")
        batch.create_index("ix_users_username", ["username"], unique=True)
