"""``ix_jobs_finished`` covers what status reads of the last hour's jobs (finished_at,
state, capability, started_at): the window is one index range with no table lookups.

Revision ID: 0013_finished_cover
Revises: 0012_models13
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0013_finished_cover"
down_revision = "0012_models13"
branch_labels = None
depends_on = None

COLUMNS = ["finished_at", "state", "capability", "started_at"]


def upgrade() -> None:
    op.drop_index("ix_jobs_finished", table_name="jobs")
    op.create_index("ix_jobs_finished", "jobs", COLUMNS, unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_finished", table_name="jobs")
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"], unique=False)
