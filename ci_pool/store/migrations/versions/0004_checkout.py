"""Recorded workflow keys: a pipeline's run-name and permissions, a job's permissions and
environment.

Revision ID: 0004_checkout
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_checkout"
down_revision = "0004_trig"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pipelines", sa.Column("run_name", sa.String(length=200), nullable=True))
    op.add_column("pipelines", sa.Column("permissions", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("permissions", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("environment", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("environment")
        batch.drop_column("permissions")
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_column("permissions")
        batch.drop_column("run_name")
