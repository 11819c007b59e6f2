"""What every part of the pool holds: settings, the store, the broker's Celery app and its Redis."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import redis

from ci_pool.core.capabilities import Capability
from ci_pool.remotes import LookupLimit
from ci_pool.service.runner_users import RunnerUsers
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

    @cached_property
    def runner_users(self) -> RunnerUsers:
        """The registered runners' Redis users, kept in step with their claims."""
        return RunnerUsers(self.settings, self.store, self.redis)

    def publish(self, capability: str, job_id: str) -> None:
        """Send ``run_job(job_id)`` to the queue of ``capability``, or, for a job sent to
        runners by name, to a live matching runner's own queue (none live: it waits)."""
        self.send(self.settings.capabilities[capability], job_id, self.store.get_job(job_id).runner)

    def send(self, cap: Capability, job_id: str, runner: str | None) -> str | None:
        """Publish one job: to its capability's queue, or (``runner``: a glob over runner
        names) to the least busy live runner matching it. Returns that runner's name, or
        None (sent to the capability's queue, or no runner matches yet)."""
        if runner is None:
            from ci_pool.broker.app import send_run_job

            send_run_job(self.celery, cap, job_id)
            return None
        from ci_pool.broker.targeting import send_targeted

        return send_targeted(
            self.celery,
            self.redis,
            cap,
            job_id,
            runner,
            self.store.count_running,
            ttl=self.settings.runner_ttl,
        )
