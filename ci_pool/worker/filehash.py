"""``hashFiles()`` on the runner: one sha256 over the files of the workspace that match.

As GitHub's runner does it: each matching regular file is hashed with sha256, and the
result is the sha256 of those digests one after the other (files in path order); no match
gives the empty string. Patterns are relative to the workspace (``**/go.sum``,
``!vendor/**``: a later ``!`` pattern drops what earlier ones matched), matched with the
linear-time globs of ``core.globs``.

The workspace is the job's: it may hold symlinks to anywhere and may change while it is
walked. So the walk goes through directory file descriptors, opens every directory and
file with ``O_NOFOLLOW`` (a symlink is never followed, in or out of the workspace: it is
skipped), reads only regular files, and stops at bounds on directories and files.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ci_pool.core.globs import Glob, compile_glob
from ci_pool.defaults import HASH_FILES_MAX_DIRS, HASH_FILES_MAX_FILES
from ci_pool.exceptions import InputError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: ``a/**/b`` also matches ``a/b`` (a globstar may stand for no directory at all); at most
#: this many globstars of one pattern get that second reading.
_MAX_GLOBSTARS = 4


def globstar_variants(pattern: str) -> list[str]:
    """The pattern, and each reading of its ``**/`` as no directory."""
    out = [pattern]
    for _ in range(_MAX_GLOBSTARS):
        more = []
        for p in out:
            if p.startswith("**/"):
                more.append(p[3:])
            more += [p[:i] + p[i + 3 :] for i in range(len(p)) if p.startswith("/**/", i)]
        added = [p for p in more if p not in out]
        if not added:
            break
        out += added
    return out


class FileHasher:
    """``hashFiles`` over one job's workspace (a host directory the job sees elsewhere)."""

    def __init__(self, root: Path, seen_as: str = ""):
        self.root = root
        #: The workspace's path inside the job (``github.workspace``): patterns may start
        #: with it, as they do when written ``${{ github.workspace }}/**/x``.
        self.seen_as = seen_as.rstrip("/")

    def _rules(self, patterns: list[str]) -> list[tuple[bool, list[Glob]]]:
        rules: list[tuple[bool, list[Glob]]] = []
        for raw in patterns:
            for line in raw.splitlines():
                pattern = line.strip()
                negate = pattern.startswith("!")
                pattern = pattern.removeprefix("!").strip()
                for prefix in (self.seen_as + "/", str(self.root) + "/"):
                    if prefix != "/" and pattern.startswith(prefix):
                        pattern = pattern[len(prefix) :]
                pattern = pattern.removeprefix("./")
                if not pattern:
                    continue
                if pattern.startswith("/") or ".." in pattern.split("/"):
                    raise ValueError(
                        f"hashFiles(): {line.strip()!r} is outside the workspace; give a "
                        "pattern relative to it"
                    )
                try:
                    globs = [compile_glob(v) for v in globstar_variants(pattern)]
                except InputError as exc:
                    raise ValueError(f"hashFiles(): {exc}") from None
                rules.append((negate, globs))
        return rules

    def __call__(self, patterns: list[str]) -> str:
        rules = self._rules(patterns)
        if not rules:
            return ""
        digests: list[tuple[str, bytes]] = []
        for rel, fd in self._files():
            try:
                if self._wanted(rules, rel):
                    digests.append((rel, self._digest(fd)))
            finally:
                os.close(fd)
        if not digests:
            return ""
        total = hashlib.sha256()
        for _, digest in sorted(digests):
            total.update(digest)
        return total.hexdigest()

    @staticmethod
    def _wanted(rules: list[tuple[bool, list[Glob]]], rel: str) -> bool:
        wanted = False
        for negate, globs in rules:
            if any(g.match(rel) for g in globs):
                wanted = not negate
        return wanted

    @staticmethod
    def _digest(fd: int) -> bytes:
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        return h.digest()

    def _files(self) -> Iterator[tuple[str, int]]:
        """(relative path, open fd) of each regular file under the root; no symlink followed."""
        try:
            top = os.open(self.root, _DIR_FLAGS)
        except OSError:
            return
        stack: list[tuple[int, str]] = [(top, "")]
        dirs = files = 0
        try:
            while stack:
                dfd, prefix = stack.pop()
                try:
                    names = sorted(os.listdir(dfd))
                    for name in names:
                        opened = self._open(dfd, name)
                        if opened is None:
                            continue
                        fd, is_dir = opened
                        if is_dir:
                            dirs += 1
                            if dirs > HASH_FILES_MAX_DIRS:
                                os.close(fd)
                                raise ValueError(
                                    f"hashFiles(): the workspace has over {HASH_FILES_MAX_DIRS} "
                                    "directories; hash fewer, or a narrower tree"
                                )
                            stack.append((fd, f"{prefix}{name}/"))
                            continue
                        files += 1
                        if files > HASH_FILES_MAX_FILES:
                            os.close(fd)
                            raise ValueError(
                                f"hashFiles(): the workspace has over {HASH_FILES_MAX_FILES} files"
                            )
                        yield f"{prefix}{name}", fd
                finally:
                    os.close(dfd)
        finally:
            for dfd, _ in stack:
                os.close(dfd)

    @staticmethod
    def _open(dfd: int, name: str) -> tuple[int, bool] | None:
        """``name`` in ``dfd`` opened without following a symlink: (fd, is a directory), or
        None for a symlink, a special file or anything that cannot be opened."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode):
            flags = _DIR_FLAGS
        elif stat.S_ISREG(st.st_mode):
            flags = _FILE_FLAGS
        else:
            return None  # symlinks, fifos, sockets, devices
        try:
            fd = os.open(name, flags, dir_fd=dfd)
        except OSError:
            return None  # replaced by a symlink since the stat (ELOOP), or gone
        kind = os.fstat(fd).st_mode
        if stat.S_ISDIR(kind) != (flags == _DIR_FLAGS) or not (
            stat.S_ISDIR(kind) or stat.S_ISREG(kind)
        ):
            os.close(fd)
            return None
        return fd, stat.S_ISDIR(kind)
