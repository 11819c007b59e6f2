"""One-time requests behind ``ci-pool runner exec``: the command a runner may run is kept
here and taken once by that runner, never read from the broker's control message.

Revision ID: 0010_exec_requests
Revises: 0009_acl
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_exec_requests"
down_revision = "0009_acl"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runner_exec_requests",
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("runner_id", sa.String(length=255), nullable=False),
        sa.Column("argv", sa.JSON(), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("taken_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("token_sha256"),
    )


def downgrade() -> None:
    op.drop_table("runner_exec_requests")
