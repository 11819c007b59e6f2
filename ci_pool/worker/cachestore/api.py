"""The pool cache through the API's runner routes: the API keeps the archives in the
pool's own backend and lets a job see only the entries of its repository."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from ci_pool.cachestore.base import CacheBackend, CacheEntry
from ci_pool.worker.api_store import ApiRunnerStore


class ApiCache(CacheBackend):
    def __init__(self, store: ApiRunnerStore, job_id: str):
        self.store, self.job_id = store, job_id
        self.where = f"the pool API at {store.settings.api_url}"

    def find(self, prefix: str) -> list[CacheEntry]:
        res = self.store.cache_call(self.job_id, "GET", "", params={"prefix": prefix})
        return [
            CacheEntry(e["name"], int(e["size"]), float(e["used_at"]))
            for e in res.json()["entries"]
        ]

    def fetch(self, name: str, out: BinaryIO) -> bool:
        return self.store.cache_fetch(self.job_id, name, out)

    def put(self, name: str, archive: Path) -> None:
        self.store.cache_put(self.job_id, name, archive)

    def touch(self, name: str) -> None:
        self.store.cache_call(self.job_id, "POST", "/touch", params={"name": name})

    def delete(self, name: str) -> None:
        self.store.cache_call(self.job_id, "DELETE", "/archive", params={"name": name})

    def evict(self, max_bytes: int, layout: str) -> list[CacheEntry]:
        """Nothing here: the API evicts across the whole pool cache after each save."""
        return []
