"""Webhook replays by content: a unique content key per accepted push.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "webhook_deliveries", sa.Column("content_key", sa.String(length=64), nullable=True)
    )
    op.create_index(
        "ix_webhook_deliveries_content_key",
        "webhook_deliveries",
        ["content_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_content_key", table_name="webhook_deliveries")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_column("content_key")
