"""Artifacts: files matched by a job's globs, copied out of the workspace with their sha256.
Nothing outside the workspace can be collected, symlinks included."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ci_pool.jobs import check_artifact_glob


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Collected:
    files: list[ArtifactFile]
    #: Human-readable reasons for what was skipped (escapes, no match).
    problems: list[str]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(root: Path, candidate: Path) -> bool:
    try:
        candidate.resolve(strict=True).relative_to(root)
    except (ValueError, OSError):
        return False
    return True


def collect(workspace: Path, patterns: list[str], dest: Path) -> Collected:
    """Copy every regular file matching ``patterns`` to ``dest`` (same relative paths)."""
    root = workspace.resolve()
    files: dict[str, ArtifactFile] = {}
    problems: list[str] = []
    for pattern in patterns:
        check_artifact_glob(pattern)
        matched = False
        for match in sorted(root.glob(pattern)):
            candidates = (
                [match]
                if not match.is_dir() or match.is_symlink()
                else sorted(p for p in match.rglob("*") if not p.is_dir() or p.is_symlink())
            )
            for path in candidates:
                rel = path.relative_to(root).as_posix()
                if rel.startswith(".git/") or rel in files:
                    continue
                matched = True
                if not _inside(root, path):
                    problems.append(f"{rel}: points outside the workspace; not collected")
                    continue
                if not path.resolve().is_file():
                    continue
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path.resolve(), target)
                os.chmod(target, 0o644)
                files[rel] = ArtifactFile(rel, target.stat().st_size, _sha256(target))
        if not matched:
            problems.append(f"{pattern}: no file matched")
    return Collected(sorted(files.values(), key=lambda f: f.path), problems)
