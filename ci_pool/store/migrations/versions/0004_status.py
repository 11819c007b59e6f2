"""Commit statuses: the outbox of job state changes the forge has yet to hear.

Revision ID: 0004_status
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_status"
down_revision = "0004_ctx"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "status_outbox",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("sent_seq", sa.Integer(), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("next_try_at", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("gave_up", sa.Boolean(), nullable=False),
        sa.Column("sent_state", sa.String(length=16), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index("ix_status_outbox_due", "status_outbox", ["next_try_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_status_outbox_due", table_name="status_outbox")
    op.drop_table("status_outbox")
