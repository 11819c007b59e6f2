"""A job's service containers and its container settings (options, volumes, credentials).

Revision ID: 0006_services
Revises: 0006_artifacts
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_services"
down_revision = "0006_artifacts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("services", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("container", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("container")
        batch.drop_column("services")
