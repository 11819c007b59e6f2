"""Triggers: the event kept with each pipeline, registered repositories and the schedule
slots beat has started.

Revision ID: 0004_trig
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_trig"
down_revision = "0004_files"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pipelines", sa.Column("trigger", sa.JSON(), nullable=True))
    op.create_table(
        "repositories",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("ref", sa.String(length=255), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.Column("added_by", sa.String(length=200), nullable=False),
        sa.Column("scanned_commit", sa.String(length=64), nullable=True),
        sa.Column("scanned_at", sa.DateTime(), nullable=True),
        sa.Column("schedules", sa.JSON(), nullable=False),
        sa.Column("scan_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("url"),
    )
    op.create_table(
        "schedule_slots",
        sa.Column("repo_id", sa.String(length=32), nullable=False),
        sa.Column("file", sa.String(length=500), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("slot", sa.DateTime(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=False),
        sa.Column("pipeline_id", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["repo_id"], ["repositories.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("repo_id", "file", "cron", "slot"),
    )


def downgrade() -> None:
    op.drop_table("schedule_slots")
    op.drop_table("repositories")
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_column("trigger")
