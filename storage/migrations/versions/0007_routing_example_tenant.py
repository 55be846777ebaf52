"""Routing examples belong to a tenant: the examples stored so far go to tenant "default".

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("routing_examples") as batch:
        batch.add_column(sa.Column("tenant", sa.String(64), nullable=False,
                                   server_default="default"))
    with op.batch_alter_table("routing_examples") as batch:
        batch.alter_column("tenant", server_default=None)
        batch.drop_index("ix_routing_examples_type_source")
        batch.create_index("ix_routing_examples_tenant_type_source",
                           ["tenant", "agent_type", "source", "id"])


def downgrade() -> None:
    with op.batch_alter_table("routing_examples") as batch:
        batch.drop_index("ix_routing_examples_tenant_type_source")
        batch.create_index("ix_routing_examples_type_source", ["agent_type", "source", "id"])
        batch.drop_column("tenant")
