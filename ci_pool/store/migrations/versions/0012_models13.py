"""What started a pipeline run is one record: the trigger a webhook, schedule or dispatch
saw (``pipelines.trigger``) moves into the run's facts (``pipelines.context``), where the
payload, actor and inputs it repeated already were; the ``trigger`` column goes.

Revision ID: 0012_models13
Revises: 0011_provtoken
Create Date: 2026-11-26
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0012_models13"
down_revision = "0011_provtoken"
branch_labels = None
depends_on = None

#: The trigger's own facts, kept under the same names in the run's facts.
TRIGGER_KEYS: tuple[str, ...] = (
    "event_name",
    "ref",
    "ref_type",
    "ref_name",
    "sha",
    "head_ref",
    "base_ref",
)
TRIGGER_KEYS += ("head_repo", "base_repo", "number", "action", "schedule", "slot")
TRIGGER_KEYS += ("secrets_allowed",)


def _pipelines(*columns: str) -> sa.TableClause:
    return sa.table(
        "pipelines",
        sa.column("id", sa.String),
        *(sa.column(name, sa.JSON(none_as_null=True)) for name in columns),
    )


def merged(context: dict[str, Any] | None, trigger: dict[str, Any]) -> dict[str, Any]:
    """The run's facts with its trigger's: the payload, actor and raw inputs the trigger
    repeated fill only what the facts lack."""
    facts = dict(context or {})
    facts.update({k: trigger[k] for k in TRIGGER_KEYS if k in trigger})
    if not facts.get("event"):
        facts["event"] = trigger.get("payload") or {}
    if not facts.get("actor"):
        facts["actor"] = str(trigger.get("actor") or "")[:200]
    return facts


def split(facts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the facts without the trigger's keys, the trigger as 0011 kept it)."""
    trigger: dict[str, Any] = {k: facts[k] for k in TRIGGER_KEYS if k in facts}
    trigger["actor"] = facts.get("actor", "")
    trigger["payload"] = facts.get("event") or {}
    given = trigger["payload"].get("inputs") if trigger["event_name"] == "workflow_dispatch" else {}
    trigger["inputs"] = {str(k): str(v) for k, v in (given or {}).items()}
    return {k: v for k, v in facts.items() if k not in TRIGGER_KEYS}, trigger


def upgrade() -> None:
    conn = op.get_bind()
    table = _pipelines("context", "trigger")
    rows = conn.execute(sa.select(table.c.id, table.c.context, table.c.trigger)).all()
    for pipeline_id, context, trigger in rows:
        if isinstance(trigger, dict):
            conn.execute(
                table.update()
                .where(table.c.id == pipeline_id)
                .values(context=merged(context, trigger))
            )
    with op.batch_alter_table("pipelines") as batch:
        batch.drop_column("trigger")


def downgrade() -> None:
    with op.batch_alter_table("pipelines") as batch:
        batch.add_column(sa.Column("trigger", sa.JSON(), nullable=True))
    conn = op.get_bind()
    table = _pipelines("context", "trigger")
    for pipeline_id, context in conn.execute(sa.select(table.c.id, table.c.context)).all():
        if isinstance(context, dict) and context.get("event_name"):
            facts, trigger = split(context)
            conn.execute(
                table.update()
                .where(table.c.id == pipeline_id)
                .values(context=facts, trigger=trigger)
            )
