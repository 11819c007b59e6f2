"""Named artifacts (``actions/upload-artifact``): the name an artifact's files were
uploaded under, so the jobs of a pipeline find them by name.

Revision ID: 0006_artifacts
Revises: 0005_dynmat
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_artifacts"
down_revision = "0005_dynmat"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(sa.Column("name", sa.String(length=255), nullable=True))
    op.create_index("ix_artifacts_name", "artifacts", ["name"])


def downgrade() -> None:
    op.drop_index("ix_artifacts_name", table_name="artifacts")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("name")
