"""A registration token may be bound to one runner name (provisioning issues them so, and
a name-bound token re-keys that runner when it is registered and active: rotation).

Revision ID: 0011_provtoken
Revises: 0010_exec_requests
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_provtoken"
down_revision = "0010_exec_requests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runner_registrations", sa.Column("name", sa.String(length=63), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runner_registrations") as batch:
        batch.drop_column("name")
