"""Artifacts: files matched by a job's globs, copied out of the workspace with their sha256.

The job owns the workspace and may swap any file for a symlink while collection runs, so
globs only list names: every file is opened through ``runner.jobfiles`` (no symlink
followed, regular files only) and copied and hashed from that one open file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ci_pool.core.globs import glob_match
from ci_pool.core.specs import check_artifact_glob
from ci_pool.exceptions import JobFileRefused
from ci_pool.worker.filehash import globstar_variants
from ci_pool.worker.jobfiles import JobDir


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Collected:
    files: list[ArtifactFile]
    #: Human-readable reasons for what was skipped (symlinks, non-regular files, no match).
    problems: list[str]


def _names(root: Path, pattern: str) -> Iterator[str]:
    """Relative names a pattern lists: files, symlinks, and what is below a matched
    directory (symlinks to directories are listed, not entered)."""
    for match in sorted(root.glob(pattern)):
        link = _linked_ancestor(root, match)
        if link is not None:  # glob went through a symlink: list the link, not its target
            yield link
            continue
        if match.is_symlink() or not match.is_dir():
            yield match.relative_to(root).as_posix()
            continue
        for dirpath, dirnames, filenames in os.walk(match):
            base = Path(dirpath)
            links = [d for d in dirnames if (base / d).is_symlink()]
            for name in sorted([*filenames, *links]):
                yield (base / name).relative_to(root).as_posix()


def _linked_ancestor(root: Path, match: Path) -> str | None:
    """The first directory above ``match`` (below ``root``) that is a symlink, if any."""
    parts = match.relative_to(root).parts
    for depth in range(1, len(parts)):
        if root.joinpath(*parts[:depth]).is_symlink():
            return "/".join(parts[:depth])
    return None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which workspace files to collect and under what names: ``patterns`` (globs relative
    to the workspace), minus what ``exclude`` matches (a file, or a directory above it);
    stored names are relative to ``base`` (a workspace directory, ``""`` for the root)."""

    patterns: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    base: str = ""
    #: At most this many files (past it, collection stops and says so).
    max_files: int | None = None
    #: Workspace names not to collect (already stored under the same name).
    skip: frozenset[str] = frozenset()

    def excluded(self, rel: str) -> bool:
        parts = rel.split("/")
        names = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        # ``!dist/**/*.map`` also drops ``dist/app.map``, as Actions' globs do.
        return any(
            glob_match(v, n) for p in self.exclude for v in globstar_variants(p) for n in names
        )

    def stored_name(self, rel: str) -> str:
        return rel[len(self.base) + 1 :] if self.base else rel


def collect(workspace: Path, patterns: list[str], dest: Path, max_bytes: int) -> Collected:
    """Copy every regular file matching ``patterns`` to ``dest`` (same relative paths),
    at most ``max_bytes`` in all (the ``artifact_max_bytes`` setting)."""
    return collect_selection(workspace, Selection(tuple(patterns)), dest, max_bytes)


def selected_names(root: Path, sel: Selection, unmatched: list[str] | None = None) -> Iterator[str]:
    """Workspace-relative names ``sel`` selects, each once, ``.git`` left out; patterns
    that match nothing are added to ``unmatched``."""
    seen: set[str] = set(sel.skip)
    for pattern in sel.patterns:
        check_artifact_glob(pattern)
        matched = False
        for rel in _names(root, pattern):
            if rel == ".git" or rel.startswith(".git/") or rel in seen or sel.excluded(rel):
                continue
            seen.add(rel)
            matched = True
            yield rel
        if not matched and unmatched is not None:
            unmatched.append(pattern)


def collect_selection(workspace: Path, sel: Selection, dest: Path, max_bytes: int) -> Collected:
    """Copy every regular file ``sel`` selects to ``dest`` under its stored name, at most
    ``max_bytes`` in all."""
    root = workspace.resolve()
    files: dict[str, ArtifactFile] = {}
    problems: list[str] = []
    unmatched: list[str] = []
    left = max_bytes
    with JobDir(root) as wdir:
        for rel in selected_names(root, sel, unmatched):
            if sel.max_files is not None and len(files) >= sel.max_files:
                problems.append(
                    f"more than {sel.max_files} files matched; {rel} and the files after it "
                    "are not collected"
                )
                break
            name = sel.stored_name(rel)
            target = dest / name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                out = target.open("wb")
            except OSError as exc:
                # The job changed its files while they were collected (a directory turned
                # into a file or a link): its own doing, never the runner's failure.
                problems.append(
                    f"{rel}: cannot be stored as {name} beside the files collected before it "
                    f"({exc.strerror}); not collected"
                )
                continue
            try:
                with out:
                    size, sha256 = wdir.copy(rel, out, left)
            except JobFileRefused as exc:
                target.unlink(missing_ok=True)
                problems.append(f"{exc}; not collected")
                continue
            if size > left:
                target.unlink(missing_ok=True)
                problems.append(
                    f"{rel}: goes past the artifact_max_bytes limit of {max_bytes} bytes "
                    "for the job; it and the files after it are not collected"
                )
                break
            left -= size
            os.chmod(target, 0o644)
            files[name] = ArtifactFile(name, size, sha256)
    problems += [f"{pattern}: no file matched" for pattern in unmatched]
    return Collected(sorted(files.values(), key=lambda f: f.path), problems)
