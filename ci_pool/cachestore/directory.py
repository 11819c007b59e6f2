"""The pool cache in a directory, shared by the runners of one host.

Names may be longer than a file name can be, so each archive is kept as ``<sha256>.tar``
beside ``<sha256>.name`` holding its name; both are written to a temporary file and
renamed into place, so concurrent runners never see half an archive. Use time is the
archive's modification time."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from ci_pool.cachestore.base import CacheBackend, CacheEntry
from ci_pool.exceptions import InfraError


class DirectoryCache(CacheBackend):
    def __init__(self, root: Path):
        self.root = root
        self.where = f"directory {root}"
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InfraError(f"pool cache {self.where}: {exc.strerror}") from None

    def _paths(self, name: str) -> tuple[Path, Path]:
        digest = hashlib.sha256(name.encode()).hexdigest()
        return self.root / f"{digest}.tar", self.root / f"{digest}.name"

    def _write(self, target: Path, fill: BinaryIO | Path | bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(fill, bytes):
                    out.write(fill)
                elif isinstance(fill, Path):
                    with fill.open("rb") as src:
                        shutil.copyfileobj(src, out)
                else:
                    shutil.copyfileobj(fill, out)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def find(self, prefix: str) -> list[CacheEntry]:
        found: list[CacheEntry] = []
        for entry in os.scandir(self.root):
            if not entry.name.endswith(".name"):
                continue
            try:
                name = Path(entry.path).read_text()
                st = os.stat(entry.path[: -len(".name")] + ".tar")
            except (OSError, UnicodeDecodeError):
                continue  # removed meanwhile, or being written
            if name.startswith(prefix):
                found.append(CacheEntry(name, st.st_size, st.st_mtime))
        return found

    def fetch(self, name: str, out: BinaryIO) -> bool:
        archive, _ = self._paths(name)
        try:
            with archive.open("rb") as src:
                shutil.copyfileobj(src, out)
        except FileNotFoundError:
            return False
        return True

    def put(self, name: str, archive: Path) -> None:
        tar, label = self._paths(name)
        self._write(tar, archive)
        self._write(label, name.encode())

    def touch(self, name: str) -> None:
        tar, _ = self._paths(name)
        now = time.time()
        try:
            os.utime(tar, (now, now))
        except FileNotFoundError:
            pass

    def delete(self, name: str) -> None:
        tar, label = self._paths(name)
        label.unlink(missing_ok=True)
        tar.unlink(missing_ok=True)
