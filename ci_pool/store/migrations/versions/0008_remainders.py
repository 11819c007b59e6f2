"""Artifact sets: one row per uploaded or collected artifact, with its expiry; the unique
(run, name) row is the claim concurrent uploads of one name race for.

Revision ID: 0008_remainders
Revises: 0008_ui
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_remainders"
down_revision = "0008_ui"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifact_sets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("expired_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "name", name="uq_artifact_sets_run_name"),
    )
    op.create_index("ix_artifact_sets_job_id", "artifact_sets", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_artifact_sets_job_id", table_name="artifact_sets")
    op.drop_table("artifact_sets")
