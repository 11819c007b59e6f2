"""Policy and the API: token limits, idempotency keys, webhook deliveries, job pages.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("owner", "key"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("delivery_id", sa.String(length=128), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("repo", sa.Text(), nullable=True),
        sa.Column("ref", sa.String(length=255), nullable=True),
        sa.Column("commit_sha", sa.String(length=64), nullable=True),
        sa.Column("pipeline_ids", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "delivery_id"),
    )
    op.add_column("api_tokens", sa.Column("capabilities", sa.JSON(), nullable=True))
    op.add_column("api_tokens", sa.Column("repos", sa.JSON(), nullable=True))
    op.create_index("ix_jobs_created", "jobs", ["created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_created", table_name="jobs")
    op.drop_column("api_tokens", "repos")
    op.drop_column("api_tokens", "capabilities")
    op.drop_table("webhook_deliveries")
    op.drop_table("idempotency_keys")
