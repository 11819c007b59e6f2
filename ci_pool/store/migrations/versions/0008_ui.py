"""The web view's reads: pipelines newest first (by capability too), a runner's jobs.

Revision ID: 0008_ui
Revises: 0007_identities
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0008_ui"
down_revision = "0007_identities"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_pipelines_created", "pipelines", ["created_at", "id"])
    op.create_index("ix_jobs_runner", "jobs", ["runner_id", "started_at"])
    op.create_index("ix_jobs_pipeline_capability", "jobs", ["pipeline_id", "capability"])


def downgrade() -> None:
    op.drop_index("ix_jobs_pipeline_capability", table_name="jobs")
    op.drop_index("ix_jobs_runner", table_name="jobs")
    op.drop_index("ix_pipelines_created", table_name="pipelines")
