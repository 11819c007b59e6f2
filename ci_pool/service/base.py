"""What every part of the pool holds: settings, the store, the broker's Celery app and its Redis."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import redis

from ci_pool.remotes import LookupLimit
from ci_pool.settings import Settings
from ci_pool.store import Store
from ci_pool.store.files import private_dir

if TYPE_CHECKING:
    # Celery and kombu load on the first message sent: reading commands never pay for them.
    from celery import Celery


class PoolBase:
    """The pool's connections, made on first use."""

    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings
        self._store = store
        #: Ref look-ups at submit contact servers the submitter names: a bounded few at once.
        self.lookups = LookupLimit(settings.ref_lookup_concurrency, settings.ref_lookup_wait)

    @cached_property
    def store(self) -> Store:
        store = self._store or Store(self.settings.resolved_store_url)
        if self._store is None:
            private_dir(self.settings.home)
        store.init_schema()
        return store

    @cached_property
    def celery(self) -> Celery:
        from ci_pool.broker.app import create_celery

        return create_celery(self.settings)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.broker_url, socket_timeout=10)

    def publish(self, capability: str, job_id: str) -> None:
        """Send ``run_job(job_id)`` to the queue of ``capability``."""
        from ci_pool.broker.app import send_run_job

        send_run_job(self.celery, self.settings.capabilities[capability], job_id)
