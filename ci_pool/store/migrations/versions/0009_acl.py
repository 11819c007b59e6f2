"""A runner's Redis password as its SHA-256, so its ACL user can be re-created after a
Redis restart without the password being kept in clear.

Revision ID: 0009_acl
Revises: 0008_targeting
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_acl"
down_revision = "0008_targeting"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "runner_identities",
        sa.Column("redis_password_sha256", sa.String(length=64), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("runner_identities") as batch:
        batch.drop_column("redis_password_sha256")
