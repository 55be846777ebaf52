"""Cost accounting: the CPU time of each attempt, and each task's CPU and wall-time totals.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-12
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_attempts") as batch:
        batch.add_column(sa.Column("cpu_s", sa.Float(), nullable=True))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("cpu_s", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("wall_s", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("wall_s")
        batch.drop_column("cpu_s")
    with op.batch_alter_table("task_attempts") as batch:
        batch.drop_column("cpu_s")
