"""Runner identities: one-time registration tokens and per-runner credentials.

Revision ID: 0007_identities
Revises: 0006_sync
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_identities"
down_revision = "0006_sync"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runner_registrations",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_by", sa.String(length=63), nullable=True),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "runner_identities",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("sha256"),
    )


def downgrade() -> None:
    op.drop_table("runner_identities")
    op.drop_table("runner_registrations")
