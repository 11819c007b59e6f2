"""The whole schema: every module that keeps a table registers it on ``Base``; importing
them here makes ``metadata()`` complete for migrations and their checks."""

from __future__ import annotations

from sqlalchemy import MetaData


def metadata() -> MetaData:
    # The store's table modules register on Base when imported.
    from ci_pool.store import (  # noqa: F401
        deliveries,
        diagnostics,
        idempotency,
        identities,
        outbox,
        reports,
        schedules,
        sync,
        tokens,
    )
    from ci_pool.store.models import Base

    return Base.metadata
