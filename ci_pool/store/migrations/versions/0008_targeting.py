"""A job's runner glob: the names of the runners it may run on (``--runner``, ``runner:``,
``runs-on: {group: ...}``).

Revision ID: 0008_targeting
Revises: 0008_remainders
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_targeting"
down_revision = "0008_remainders"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("runner", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("runner")
