"""Concurrency groups: the group of a pipeline or job, and who holds and waits for each.

Revision ID: 0004_conc
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_conc"
down_revision = "0004_status"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pipelines", sa.Column("concurrency", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("concurrency", sa.JSON(), nullable=True))
    op.create_table(
        "concurrency_groups",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("repo", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("holder", sa.String(length=48), nullable=True),
        sa.Column("pending", sa.String(length=48), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_concurrency_groups_holder", "concurrency_groups", ["holder"])


def downgrade() -> None:
    op.drop_index("ix_concurrency_groups_holder", table_name="concurrency_groups")
    op.drop_table("concurrency_groups")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("concurrency")
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_column("concurrency")
