"""The pool cache as a worker reaches it: the backend the settings name
(``ci_pool.cachestore``: a directory or a bucket), or, for a runner that reaches the store
through the API, the API's cache routes (``api``), scoped there to the job's repository."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ci_pool.cachestore import CacheBackend, CacheEntry
from ci_pool.cachestore import open_backend as open_pool_backend
from ci_pool.settings import Settings

if TYPE_CHECKING:
    from ci_pool.worker.runner_store import RunnerStore

__all__ = ["CacheBackend", "CacheEntry", "open_backend"]


def open_backend(
    settings: Settings, store: RunnerStore | None = None, job_id: str | None = None
) -> CacheBackend:
    """The API's cache for job ``job_id`` when ``store`` is the API, else the pool's."""
    from ci_pool.worker.api_store import ApiRunnerStore

    if isinstance(store, ApiRunnerStore) and job_id is not None:
        from ci_pool.worker.cachestore.api import ApiCache

        return ApiCache(store, job_id)
    return open_pool_backend(settings)
