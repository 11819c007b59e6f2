"""The local changes jobs carry (``submit/run --sync``), each payload once by its sha256.

Revision ID: 0006_sync
Revises: 0006_services
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_sync"
down_revision = "0006_services"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_payloads",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )


def downgrade() -> None:
    op.drop_table("sync_payloads")
