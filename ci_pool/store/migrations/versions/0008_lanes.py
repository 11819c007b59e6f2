"""The audit of diagnostic commands run on runners (``ci-pool runner exec``).

Revision ID: 0008_lanes
Revises: 0007_identities
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_lanes"
down_revision = "0007_identities"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runner_execs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.Column("runner_id", sa.String(length=255), nullable=False),
        sa.Column("capability", sa.String(length=63), nullable=False),
        sa.Column("argv", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("output_bytes", sa.Integer(), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_runner_execs_at", "runner_execs", ["at"])
    op.create_index("ix_runner_execs_runner_id", "runner_execs", ["runner_id"])


def downgrade() -> None:
    op.drop_index("ix_runner_execs_runner_id", table_name="runner_execs")
    op.drop_index("ix_runner_execs_at", table_name="runner_execs")
    op.drop_table("runner_execs")
