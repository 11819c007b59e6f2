"""The submitter's local changes for ``submit/run --sync``, read from a git worktree.

``patch``: the worktree's HEAD (which must be on the git server) and one binary diff of
everything that differs from it, tracked changes and untracked files not ignored alike
(built in a throwaway index: the worktree's own index is left alone).
``snapshot``: a gzipped tarball of the tracked and untracked-not-ignored files, for a HEAD
that was never pushed. Both are refused over ``sync_max_bytes``."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ci_pool.core.sync import SYNC_MODES, SyncMode
from ci_pool.defaults import SYNC_GIT_TIMEOUT
from ci_pool.exceptions import InputError

if TYPE_CHECKING:
    from ci_pool.cli.client import PoolClient
    from ci_pool.core.sync import SyncSource


@dataclass(frozen=True)
class LocalChanges:
    """What ``--sync`` sends: the base commit, the mode and the payload."""

    base: str
    mode: SyncMode
    data: bytes


def _git(
    worktree: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(
            ["git", "-C", str(worktree), *args],
            capture_output=True,
            timeout=SYNC_GIT_TIMEOUT,
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise InputError("git is not installed (needed by --sync)", field="--sync") from None
    except subprocess.TimeoutExpired:
        raise InputError(
            f"git {args[0]} took over {SYNC_GIT_TIMEOUT:.0f} s in {worktree}", field="--sync"
        ) from None
    if check and proc.returncode != 0:
        from ci_pool.git import git_error

        raise InputError(
            f"git {args[0]} in {worktree}: {git_error(proc.stderr.decode(errors='replace'))}",
            field="--sync",
        )
    return proc


def top_level(worktree: Path) -> Path:
    """The root of the git worktree holding ``worktree``."""
    proc = _git(worktree, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise InputError(
            f"{worktree} is not in a git worktree: --sync sends the changes of the worktree "
            "you run it from (or --worktree PATH)",
            field="--worktree",
        )
    return Path(proc.stdout.decode().strip())


def head(root: Path) -> str:
    proc = _git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    if proc.returncode != 0:
        raise InputError(
            f"{root} has no commit yet: commit once, or use --sync snapshot", field="--sync"
        )
    return proc.stdout.decode().strip()


def check_pushed(root: Path, repo: str, base: str) -> None:
    """Refuse a base commit that no branch or tag on ``repo``'s server contains (as far
    as this repository knows the server's commits)."""
    proc = _git(root, "ls-remote", "--end-of-options", repo, check=False)
    if proc.returncode != 0:
        from ci_pool.git import git_error

        raise InputError(
            f"cannot list the refs of {repo}: {git_error(proc.stderr.decode(errors='replace'))}",
            field="--repo",
        )
    tips = {line.split("\t", 1)[0] for line in proc.stdout.decode().splitlines() if line}
    if base in tips:
        return
    known = _present(root, tips)
    if known and not _git(root, "rev-list", "-n1", base, "--not", *known).stdout.strip():
        return
    raise InputError(
        f"commit {base[:12]} (HEAD of {root}) is not on {repo}: the runner checks the base "
        "out from there. Push it (git push), or send the whole worktree with --sync snapshot",
        field="--sync",
    )


def _present(root: Path, shas: set[str]) -> list[str]:
    """The commits of ``shas`` this repository has."""
    if not shas:
        return []
    listing = "".join(f"{sha}\n" for sha in sorted(shas)).encode()
    proc = subprocess.run(
        ["git", "-C", str(root), "cat-file", "--batch-check=%(objectname) %(objecttype)"],
        input=listing,
        capture_output=True,
        timeout=SYNC_GIT_TIMEOUT,
        check=False,
    )
    return [
        line.split()[0]
        for line in proc.stdout.decode().splitlines()
        if line.endswith(" commit") or line.endswith(" tag")
    ]


def make_patch(root: Path, base: str) -> bytes:
    """One binary diff from ``base`` to the worktree, untracked files not ignored included."""
    with tempfile.TemporaryDirectory(prefix="ci-pool-sync-") as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(root, "read-tree", base, env=env)
        _git(root, "add", "--all", "--", ".", env=env)
        return _git(
            root, "diff", "--cached", "--binary", "--no-color", "--no-ext-diff", base, env=env
        ).stdout


def make_snapshot(root: Path) -> bytes:
    """A gzipped tarball of the tracked and untracked-not-ignored files of the worktree
    (symlinks as symlinks; deleted files and submodule directories left out)."""
    listing = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    names = sorted({n for n in listing.decode("utf-8", "surrogateescape").split("\0") if n})
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in names:
            path = root / name
            if path.is_symlink() or path.is_file():
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isreg():
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def collect(mode: SyncMode, worktree: Path, repo: str, max_bytes: int) -> LocalChanges:
    """The local changes of ``worktree`` to send with a job on ``repo``."""
    root = top_level(worktree)
    if mode == "patch":
        base = head(root)
        check_pushed(root, repo, base)
        data = make_patch(root, base)
    else:
        proc = _git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        base = proc.stdout.decode().strip() if proc.returncode == 0 else ""
        data = make_snapshot(root)
    if len(data) > max_bytes:
        raise InputError(
            f"the {mode} of {root} is {len(data)} bytes, over the limit of {max_bytes} "
            "(setting sync_max_bytes): ignore build outputs in .gitignore, commit and push "
            "what is large, or raise the limit",
            field="--sync",
        )
    return LocalChanges(base, mode, data)


def send(
    client: PoolClient, mode: str, worktree: Path, repo: str, ref: str, max_bytes: int
) -> tuple[str, SyncSource]:
    """Upload the local changes of ``worktree``: the ref the job runs at (its base commit)
    and the ``SyncSource`` its checkout names."""
    if mode not in SYNC_MODES:
        raise InputError(f"{mode!r} is not one of: {', '.join(SYNC_MODES)}", field="--sync")
    if ref != "HEAD":
        raise InputError("--sync runs on the worktree's own HEAD; leave --ref out", field="--ref")
    changes = collect("patch" if mode == "patch" else "snapshot", worktree, repo, max_bytes)
    source = client.upload_sync(changes.mode, changes.data)
    return changes.base or ref, source
