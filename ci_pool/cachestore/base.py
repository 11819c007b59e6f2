"""The pool cache's storage contract: archives stored under opaque names, found by name
prefix, used least recently first evicted. One backend per kind: a directory shared by the
runners of one host, an S3-compatible bucket shared by runners on many hosts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One stored archive: its name, size in bytes and when it was last saved or restored
    (seconds since the epoch)."""

    name: str
    size: int
    used_at: float


class CacheBackend(ABC):
    """Where cache archives live. Names are ``/``-separated ASCII (the caller encodes keys);
    writing an existing name replaces it whole, so a reader sees one archive or the other."""

    #: What the log says the cache is ("directory /srv/cache", "s3://bucket/prefix").
    where: str = ""

    @abstractmethod
    def find(self, prefix: str) -> list[CacheEntry]:
        """The entries whose names start with ``prefix``."""

    @abstractmethod
    def fetch(self, name: str, out: BinaryIO) -> bool:
        """Copy the archive ``name`` into ``out``; False when there is none."""

    @abstractmethod
    def put(self, name: str, archive: Path) -> None:
        """Store the file ``archive`` under ``name``."""

    @abstractmethod
    def touch(self, name: str) -> None:
        """Mark ``name`` used now (least recently used entries go first)."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name`` (nothing when it is already gone)."""

    def evict(self, max_bytes: int, layout: str) -> list[CacheEntry]:
        """Remove the least recently used entries under ``layout`` until the rest fit in
        ``max_bytes``; the removed ones."""
        entries = sorted(self.find(layout + "/"), key=lambda e: e.used_at)
        total = sum(e.size for e in entries)
        removed: list[CacheEntry] = []
        for entry in entries:
            if total <= max_bytes:
                break
            self.delete(entry.name)
            total -= entry.size
            removed.append(entry)
        return removed
