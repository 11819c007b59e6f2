"""A job's matrix computed at run time, held by its template job until it is expanded.

Revision ID: 0005_dynmat
Revises: 0004_checkout
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_dynmat"
down_revision = "0004_checkout"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("matrix_template", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("matrix_template")
