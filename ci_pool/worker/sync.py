"""The submitter's local changes on the runner (``submit/run --sync``).

Both payloads are untrusted input. A patch goes through ``git apply`` (never
``--unsafe-paths``): git refuses paths with ``..``, inside ``.git``, or reached through a
symlink, so nothing lands outside the checkout. A snapshot is checked whole before a byte
is written: regular files, directories and symlinks only, no absolute path, no ``..``,
no ``.git``, no name twice, nothing under a symlink of its own, symlinks pointing inside,
at most ``SYNC_MAX_ENTRIES`` entries and ``SYNC_UNPACK_FACTOR`` times ``sync_max_bytes``
unpacked; it is then extracted with tarfile's ``data`` filter as a second guard."""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import subprocess
import tarfile
from pathlib import Path

from ci_pool.core.sync import SyncSource
from ci_pool.defaults import SYNC_GIT_TIMEOUT, SYNC_MAX_ENTRIES, SYNC_UNPACK_FACTOR
from ci_pool.exceptions import SyncRefused
from ci_pool.git import git_error


def check_payload(source: SyncSource, data: bytes | None) -> bytes:
    """The payload, checked against the sha256 the job names."""
    if data is None:
        raise SyncRefused(f"the {source.mode} {source.sha256} is not in the store")
    if hashlib.sha256(data).hexdigest() != source.sha256:
        raise SyncRefused(f"the stored {source.mode} does not match its sha256 {source.sha256}")
    return data


def apply_patch(data: bytes, checkout: Path) -> int:
    """Apply a patch on a fresh checkout; the number of files it touches."""
    if not data.strip():
        return 0
    patch = checkout.parent / f".{checkout.name}.sync.patch"
    patch.write_bytes(data)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(checkout.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        # Never a repository above the checkout: paths are the checkout's own.
        "GIT_CEILING_DIRECTORIES": str(checkout.parent),
        "LC_ALL": "C",
    }
    try:
        proc = subprocess.run(
            ["git", "apply", "--whitespace=nowarn", "--numstat", "--apply", str(patch)],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=SYNC_GIT_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise SyncRefused(f"git apply took over {SYNC_GIT_TIMEOUT:.0f} s") from None
    finally:
        patch.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise SyncRefused(f"the patch does not apply: {git_error(proc.stderr)}")
    return len(proc.stdout.splitlines())


def _check_name(name: str) -> str:
    """The member's path, normalised; SyncRefused when it could leave the workspace."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        raise SyncRefused(f"snapshot entry {name!r}: not a relative path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise SyncRefused(f"snapshot entry {name!r}: not a relative path")
    if ".." in parts:
        raise SyncRefused(f"snapshot entry {name!r}: '..' leaves the workspace")
    if any(p.lower() == ".git" for p in parts):
        raise SyncRefused(f"snapshot entry {name!r}: a snapshot carries no .git")
    return "/".join(parts)


def _check_members(tar: tarfile.TarFile, max_bytes: int) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    links: set[str] = set()
    total = 0
    for member in tar:
        if len(members) >= SYNC_MAX_ENTRIES:
            raise SyncRefused(f"the snapshot has over {SYNC_MAX_ENTRIES} entries")
        name = _check_name(member.name)
        if name in seen:
            raise SyncRefused(f"snapshot entry {name!r} comes twice")
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise SyncRefused(f"snapshot entry {name!r} is under a symlink")
        if member.isreg():
            total += member.size
            if total > max_bytes:
                raise SyncRefused(f"the snapshot unpacks to over {max_bytes} bytes")
        elif member.issym():
            target = member.linkname
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise SyncRefused(f"snapshot symlink {name!r} -> {target!r} points outside")
            links.add(name)
        elif not member.isdir():
            raise SyncRefused(
                f"snapshot entry {name!r}: only files, directories and symlinks are unpacked"
            )
        member.name = name
        seen.add(name)
        members.append(member)
    return members


def unpack_snapshot(data: bytes, dest: Path, max_bytes: int) -> int:
    """Unpack a gzipped snapshot as the (empty) workspace ``dest``; the entries written.
    ``max_bytes`` is ``sync_max_bytes``: the unpacked size may be a multiple of it."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = _check_members(tar, max_bytes * SYNC_UNPACK_FACTOR)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SyncRefused(f"the snapshot cannot be unpacked: {exc}") from None
    return len(members)
