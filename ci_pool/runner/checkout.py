"""Git: resolve a ref at submit, and a shallow partial checkout of the exact commit."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from ci_pool import defaults
from ci_pool.exceptions import CheckoutError, InputError
from ci_pool.jobs import is_sha

#: Git must never prompt, nor read the runner's own identity or global config.
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "/bin/true",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "LC_ALL": "C",
}


def _rewrite_args(rewrites: Mapping[str, str]) -> list[str]:
    """``url.<internal>.insteadOf=<public>`` for each configured rewrite."""
    args: list[str] = []
    for public, internal in rewrites.items():
        args += ["-c", f"url.{internal}.insteadOf={public}"]
    return args


def _git(
    args: list[str],
    *,
    cwd: Path | None = None,
    timeout: float = defaults.GIT_TIMEOUT,
    rewrites: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **_GIT_ENV}
    cmd = ["git", "-c", "protocol.version=2", *_rewrite_args(rewrites or {}), *args]
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def resolve_ref(
    repo: str,
    ref: str,
    *,
    rewrites: Mapping[str, str] | None = None,
    timeout: float = defaults.LS_REMOTE_TIMEOUT,
) -> str:
    """The commit SHA that ``ref`` names in ``repo`` right now (input errors name the field)."""
    if is_sha(ref):
        return ref
    try:
        proc = _git(
            ["ls-remote", "--end-of-options", repo, ref], timeout=timeout, rewrites=rewrites
        )
    except subprocess.TimeoutExpired:
        raise InputError(f"no answer from {repo} within {timeout:.0f}s", field="repo") from None
    if proc.returncode != 0:
        raise InputError(
            f"cannot read {repo}: {_last_line(proc.stderr)}; check the URL and that the "
            "git server is reachable",
            field="repo",
        )
    candidates = {ref, f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}"}
    found: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        sha, _, name = line.partition("\t")
        if name in candidates:
            found[name] = sha
    for name in (f"refs/tags/{ref}^{{}}", f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
        if name in found:
            return found[name]
    raise InputError(f"{ref!r} is not a branch, tag or ref of {repo}", field="ref")


def checkout(
    repo: str,
    commit: str,
    dest: Path,
    *,
    rewrites: Mapping[str, str] | None = None,
    log: Callable[[str], None] = lambda _line: None,
    timeout: float = defaults.GIT_TIMEOUT,
) -> str:
    """Fetch exactly ``commit`` (depth 1, no blobs up front) into ``dest`` and check it out.

    Returns the checked-out commit SHA. Any failure is a CheckoutError (an infra error)."""
    dest.mkdir(parents=True, exist_ok=True)
    steps: list[list[str]] = [
        ["init", "-q", str(dest)],
        ["-C", str(dest), "config", "remote.origin.url", repo],
        [
            "-C",
            str(dest),
            "fetch",
            "-q",
            "--depth=1",
            "--filter=blob:none",
            "--no-tags",
            "--end-of-options",
            "origin",
            commit,
        ],
        [
            "-C",
            str(dest),
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            "--detach",
            "FETCH_HEAD",
        ],
        ["-C", str(dest), "rev-parse", "HEAD"],
    ]
    proc = None
    for args in steps:
        try:
            proc = _git(args, timeout=timeout, rewrites=rewrites)
        except subprocess.TimeoutExpired:
            raise CheckoutError(
                f"git {args[2] if args[0] == '-C' else args[0]} timed out"
            ) from None
        if proc.returncode != 0:
            verb = args[2] if args[0] == "-C" else args[0]
            raise CheckoutError(f"git {verb} failed: {_last_line(proc.stderr)}")
    assert proc is not None
    sha = proc.stdout.strip()
    if is_sha(commit) and sha != commit:
        raise CheckoutError(f"checked out {sha}, expected {commit}")
    log(f"checked out {sha}")
    return sha


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
