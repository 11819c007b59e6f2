"""The whole schema: every module that keeps a table registers it on ``Base``; importing
them here makes ``metadata()`` complete for migrations and their checks."""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData

#: Modules outside ci_pool.store that define tables.
TABLE_MODULES = ("ci_pool.tokens", "ci_pool.idempotency", "ci_pool.webhooks", "ci_pool.deliveries")


def metadata() -> MetaData:
    for name in TABLE_MODULES:
        importlib.import_module(name)
    from ci_pool.store.models import Base

    return Base.metadata
