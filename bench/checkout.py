#!/usr/bin/env python
"""Checkout benchmark: ci-pool's network and mirror checkouts against a full clone, on a
generated repository with a long history and big incompressible blobs.

    python bench/checkout.py [--commits N] [--files N] [--blob-kb N]
                             [--quick] [--out bench/results/checkout.json] [--keep]

Everything runs in a temp dir on 127.0.0.1 (bench/harness.py): `git fast-import` writes the
history into a bare repository, `git daemon` (ci_pool.embedded.GitDaemon) serves it, and every
client goes through a byte-counting TCP proxy (a thread in this process) so the bytes each
operation moves over the "network" are known. See bench/README.md for what each number means.
Exits non-zero only when the benchmark itself crashes; a missed target is reported in the JSON,
not in the exit code.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, Any

from harness import (
    MIB,
    Bench,
    ByteCountingProxy,
    add_common_args,
    logger,
    pyplot,
    ratio,
    save_figure,
)

from ci_pool import overlay, trees
from ci_pool.embedded import GitDaemon
from ci_pool.git import CheckoutRequest, checkout, mirror_path
from ci_pool.settings import Settings, load_settings

REPO_NAME = "bench.git"
#: Series that run once whatever ``--repeat`` says: each moves the whole history (seconds
#: each on the default repository) and happens once per runner and repository in real use.
ONCE = ("full_clone", "mirror_first_time")
TARGET_BYTES_RATIO = 10.0  # full clone bytes / shallow+partial bytes
TARGET_WARM_BYTES = 1_000_000  # 1 MB (decimal), over the network, a few commits behind
TARGET_WARM_OVER_WORKTREE = 1.2  # warm mirror wall time / `git worktree add` from the mirror
TARGET_WARM_SPEEDUP = 5.0  # cold shallow+partial wall time / warm mirror (issue's original)
TARGET_TREE_HIT_S = 0.5  # a second job at the same commit on the same runner
TARGET_FLOOR_RATIO = 1.05  # shallow+partial bytes / the tip's packed size
#: Filling the tree cache off the job's path: a warm-mirror miss with the cache on against
#: the same checkout with the cache off (it was 1.3x when the job waited for the fill).
TARGET_FILL_OFF_PATH = 1.1

#: git options for the fast-import of the random blobs: stored without deflate work and
#: never tried as deltas (each is bigger than the threshold).
RAW_BLOBS = ("-c", "pack.compression=0", "-c", "core.bigFileThreshold=1k")
#: Plain git for the benchmark's own commands: no prompts, no user or system config.
GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("CI_POOL_", "GIT_"))},
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "LC_ALL": "C",
}


log = logger("checkout")


def git(*args: str, input: bytes | None = None, timeout: float = 900) -> str:
    proc = subprocess.run(
        ["git", *args],
        env=GIT_ENV,
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args[:3])} failed ({proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()[-2000:]}"
        )
    return proc.stdout.decode(errors="replace").strip()


# -- the generated repository ----------------------------------------------------------------

_WORDS = [
    "self", "return", "def", "class", "import", "from", "if", "else", "for", "in", "while",
    "None", "True", "False", "value", "result", "config", "request", "response", "user",
    "item", "items", "index", "count", "name", "path", "data", "buffer", "handler", "event",
    "=", "==", "+", "-", "(", ")", "[", "]", ":", ",", "0", "1", "2", "10", "'ok'", "# note",
]  # fmt: skip


class RepoGenerator:
    """Writes a synthetic history through `git fast-import`: text files ("source code")
    edited a few at a time, plus binary files of random bytes replaced every few commits
    (incompressible and, with `-delta`, never deltified, so each version costs its size)."""

    def __init__(
        self,
        *,
        files: int,
        binaries: int,
        blob_kb: int,
        edits_per_commit: int,
        binary_every: int,
        seed: int,
    ) -> None:
        self.rng = random.Random(seed)
        self.blob_bytes = blob_kb * 1024
        self.edits = edits_per_commit
        self.binary_every = binary_every
        self.binaries = [f"assets/blob_{j:03d}.bin" for j in range(binaries)]
        n_text = max(1, files - binaries - 1)  # -1: .gitattributes
        self.text: dict[str, list[bytes]] = {}
        for i in range(n_text):
            path = f"src/pkg_{i // 50:03d}/module_{i:05d}.py"
            self.text[path] = [self._line() for _ in range(self.rng.randint(40, 160))]
        self.paths = list(self.text)
        self.n_commits = 0
        self.clock = 1_700_000_000
        self._blobs: IO[bytes] | None = None  # the blob stream while create() runs

    def _line(self) -> bytes:
        r = self.rng
        return (
            "    " * r.randint(0, 3) + " ".join(r.choices(_WORDS, k=r.randint(2, 12))) + "\n"
        ).encode()

    def _edit(self, path: str) -> bytes:
        lines = self.text[path]
        for _ in range(self.rng.randint(1, 6)):
            i = self.rng.randrange(len(lines) + 1)
            if self.rng.random() < 0.5 and i < len(lines):
                lines[i] = self._line()
            else:
                lines.insert(i, self._line())
        return b"".join(lines)

    def _commit(self, out: IO[bytes], changes: list[tuple[str, bytes | str]], parent: str) -> None:
        self.n_commits += 1
        self.clock += 600
        msg = f"commit {self.n_commits}: {len(changes)} files\n".encode()
        out.write(b"commit refs/heads/main\n")
        out.write(f"committer Bench <bench@localhost> {self.clock} +0000\n".encode())
        out.write(b"data %d\n%s\n" % (len(msg), msg))
        if parent:
            out.write(f"from {parent}\n".encode())
        for path, content in changes:
            if isinstance(content, str):  # a blob already written: its object id
                out.write(b"M 100644 %s %s\n" % (content.encode(), path.encode()))
                continue
            out.write(b"M 100644 inline %s\ndata %d\n" % (path.encode(), len(content)))
            out.write(content)
            out.write(b"\n")
        out.write(b"\n")

    def _blob(self, content: bytes) -> str:
        """Writes a random blob to the blob stream; returns its object id for the commits."""
        assert self._blobs is not None
        self._blobs.write(b"blob\ndata %d\n" % len(content))
        self._blobs.write(content)
        self._blobs.write(b"\n")
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()

    def _fast_import(
        self, bare: Path, write: Callable[[IO[bytes]], None], *git_options: str
    ) -> None:
        proc = subprocess.Popen(
            ["git", *git_options, "-C", str(bare), "fast-import", "--quiet"],
            env=GIT_ENV,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stderr is not None
        try:
            write(proc.stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise RuntimeError(f"git fast-import failed: {err.decode(errors='replace')[-2000:]}")

    def create(self, bare: Path, commits: int) -> str:
        """A new bare repository holding ``commits`` commits on main; returns the tip."""
        git("init", "-q", "--bare", "-b", "main", str(bare))
        for key, val in (
            ("uploadpack.allowFilter", "true"),
            ("uploadpack.allowAnySHA1InWant", "true"),
            ("repack.writeBitmaps", "true"),
        ):
            git("-C", str(bare), "config", key, val)
        # A bare repository reads attributes from info/ only: keep pack-objects from trying
        # to delta random blobs on every clone (what a real server would configure too).
        (bare / "info").mkdir(exist_ok=True)
        (bare / "info" / "attributes").write_text("*.bin binary -delta\n")

        # Two streams from one pass over the seeded generator (the same content as one
        # stream): the random blobs first, stored as they are (deflate level 0 is no larger
        # than level 6 on random bytes, and zlib over ~470 MiB was most of the generation
        # time) and never tried as deltas; then the commits and their text at git's default
        # compression, naming the blobs by object id.
        commits_stream = io.BytesIO()

        def write_blobs(out: IO[bytes]) -> None:
            self._blobs = out
            try:
                first: list[tuple[str, bytes | str]] = [
                    (".gitattributes", b"*.bin binary -delta\n")
                ]
                first += [(p, b"".join(lines)) for p, lines in self.text.items()]
                first += [
                    (p, self._blob(self.rng.randbytes(self.blob_bytes))) for p in self.binaries
                ]
                self._commit(commits_stream, first, "")
                for n in range(1, commits):
                    changes = self._changes(binary=n % self.binary_every == 0)
                    self._commit(commits_stream, changes, "")
            finally:
                self._blobs = None

        self._fast_import(bare, write_blobs, *RAW_BLOBS)
        self._fast_import(bare, lambda out: out.write(commits_stream.getbuffer()))
        # One pack with deltas for the text and a reachability bitmap, as a served repo has.
        git("-C", str(bare), "repack", "-a", "-d", "-q", "--write-bitmap-index")
        return git("-C", str(bare), "rev-parse", "refs/heads/main")

    def _changes(self, *, binary: bool) -> list[tuple[str, bytes | str]]:
        picked = self.rng.sample(self.paths, k=min(self.edits, len(self.paths)))
        changes: list[tuple[str, bytes | str]] = [(p, self._edit(p)) for p in picked]
        if binary and self.binaries:
            path = self.rng.choice(self.binaries)
            changes.append((path, self._blob(self.rng.randbytes(self.blob_bytes))))
        return changes

    def add_commits(self, bare: Path, n: int) -> str:
        """``n`` more text-only commits on main (a typical few-commits-behind push)."""
        tip = git("-C", str(bare), "rev-parse", "refs/heads/main")

        def write(out: IO[bytes]) -> None:
            for i in range(n):
                self._commit(out, self._changes(binary=False), tip if i == 0 else "")

        self._fast_import(bare, write)
        return git("-C", str(bare), "rev-parse", "refs/heads/main")


def repo_sizes(bare: Path, tip: str) -> dict[str, Any]:
    counts = dict(
        line.split(": ", 1) for line in git("-C", str(bare), "count-objects", "-v").splitlines()
    )
    tree = git("-C", str(bare), "ls-tree", "-r", "-l", tip).splitlines()
    sizes = [int(line.split()[3]) for line in tree]
    commits = int(git("-C", str(bare), "rev-list", "--count", tip))
    pack_bytes = int(counts["size-pack"]) * 1024
    return {
        "tip_packed_bytes": tip_packed_bytes(bare, tip),
        "commits": commits,
        "history_objects": int(counts["in-pack"]) + int(counts["count"]),
        "history_pack_bytes": pack_bytes,
        "history_pack_mib": round(pack_bytes / MIB, 1),
        "tip_files": len(sizes),
        "tip_bytes": sum(sizes),
        "tip_mib": round(sum(sizes) / MIB, 1),
    }


def tip_packed_bytes(bare: Path, tip: str) -> int:
    """The floor for a depth-1 checkout: the size of a pack holding just the tip commit and
    every tree and blob it reaches (what any client must receive to write the tree)."""
    objects = git("-C", str(bare), "rev-list", "--objects", "--no-object-names", "-n1", tip)
    proc = subprocess.Popen(
        ["git", "-C", str(bare), "pack-objects", "--stdout", "-q"],
        env=GIT_ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(objects.encode() + b"\n")
    proc.stdin.close()
    total = 0
    while chunk := proc.stdout.read(1 << 20):
        total += len(chunk)
    if proc.wait() != 0:
        raise RuntimeError("git pack-objects of the tip failed")
    return total


# -- measurement -------------------------------------------------------------------------------


@dataclass
class Series:
    name: str
    description: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        secs = [r["seconds"] for r in self.runs]
        total = [r["bytes"] for r in self.runs]
        out: dict[str, Any] = {"description": self.description, "n": len(self.runs)}
        if secs:
            med_bytes = int(statistics.median(total))
            out.update(
                median_s=round(statistics.median(secs), 4),
                min_s=round(min(secs), 4),
                max_s=round(max(secs), 4),
                median_bytes=med_bytes,
                median_mib=round(med_bytes / MIB, 3),
                min_bytes=min(total),
                max_bytes=max(total),
                median_bytes_down=int(statistics.median(r["bytes_down"] for r in self.runs)),
                median_bytes_up=int(statistics.median(r["bytes_up"] for r in self.runs)),
            )
        out["runs"] = self.runs
        return out


def measure(proxy: ByteCountingProxy, series: Series, fn: Callable[[], Any]) -> Any:
    up0, down0, conn0 = proxy.snapshot()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    up1, down1, conn1 = proxy.snapshot()
    run = {
        "seconds": round(seconds, 4),
        "bytes": (up1 - up0) + (down1 - down0),
        "bytes_down": down1 - down0,
        "bytes_up": up1 - up0,
        "connections": conn1 - conn0,
    }
    series.runs.append(run)
    log(
        f"  {series.name} #{len(series.runs)}: {seconds:.3f} s, "
        f"{run['bytes'] / MIB:.3f} MiB over {run['connections']} connection(s)"
    )
    return result


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise RuntimeError(f"could not remove {path}")


@dataclass
class Ctx:
    tmp: Path
    bare: Path
    gen: RepoGenerator
    proxy: ByteCountingProxy
    url: str
    tip: str
    config: Path
    repeat: int
    new_commits: int
    series: dict[str, Series] = field(default_factory=dict)

    def add(self, name: str, description: str) -> Series:
        self.series[name] = Series(name, description)
        return self.series[name]

    def settings(self, home: Path, **overrides: Any) -> Settings:
        return load_settings(self.config, home=home, allow_loopback_git=True, **overrides)


def _expect(got: str, want: str, what: str) -> None:
    if got != want:
        raise RuntimeError(f"{what}: checked out {got}, expected {want}")


def run_full_clone(ctx: Ctx) -> None:
    s = ctx.add(
        "full_clone", "git clone <url> <dir>: whole history, then checkout of main (one run)"
    )
    dest = ctx.tmp / "full"
    measure(ctx.proxy, s, partial(git, "clone", "-q", ctx.url, str(dest)))
    _expect(git("-C", str(dest), "rev-parse", "HEAD"), ctx.tip, s.name)
    rmtree(dest)


def run_network(ctx: Ctx, name: str, description: str, **overrides: Any) -> None:
    """Cold network checkouts: a fresh runner home each run, so no mirror and no tree cache."""
    s = ctx.add(name, description)
    for i in range(ctx.repeat):
        home = ctx.tmp / f"{name}-home-{i}"
        settings = ctx.settings(home, **overrides)
        req = CheckoutRequest(ctx.url, ctx.tip, ctx.tmp / f"{name}-{i}")
        res = _timed_checkout(ctx, s, req, settings, "network")
        _expect(res.sha, ctx.tip, s.name)
        rmtree(req.dest)
        rmtree(home)


def _timed_checkout(
    ctx: Ctx,
    series: Series,
    req: CheckoutRequest,
    settings: Settings,
    via: str,
    fill: Series | None = None,
) -> Any:
    """One checkout as a job makes it: with a directory for overlay layers beside the
    workspace (used when the tree cache serves it), unmounted afterwards. A background fill
    of the tree cache it started ends before the next measurement (timed into ``fill``:
    how long it went on after the job had its workspace)."""
    req = replace(req, layers=req.dest.with_name(req.dest.name + "-layers"))
    try:
        res = measure(ctx.proxy, series, lambda: checkout(req, settings))
        if fill is not None:
            measure(ctx.proxy, fill, trees.settle)
        elif not trees.settle(600):
            raise RuntimeError(f"{series.name}: the tree cache's background fill never ended")
    finally:
        overlay.unmount_under(req.dest)
    _expect(res.sha, req.commit, series.name)
    if res.via != via:
        raise RuntimeError(f"{series.name}: checkout via {res.via!r}, expected {via!r}")
    rmtree(req.dest)
    assert req.layers is not None
    rmtree(req.layers)
    return res


def _new_commits(ctx: Ctx, mirror: Path) -> None:
    """Push ``ctx.new_commits`` commits to the server: the mirror is now that far behind."""
    old = ctx.tip
    ctx.tip = ctx.gen.add_commits(ctx.bare, ctx.new_commits)
    if git("-C", str(mirror), "rev-parse", "main") != old:
        raise RuntimeError(f"the mirror's main is not at {old[:12]}")


def run_mirror(ctx: Ctx) -> None:
    """On a fresh runner home, once: the first checkout (creates the mirror); then per run,
    twice: the server gets new commits and the runner checks out the new tip (tree cache
    on, then off), a `git worktree add` of the same tip from the same mirror, and a
    tree-cache hit."""
    first = ctx.add(
        "mirror_first_time",
        "checkout() with mirror_cache on a runner without a mirror: git clone --mirror of "
        "the whole history, checkout from the mirror (one-off per runner and repo; the "
        "tree cache filled in the background; one run)",
    )
    warm = ctx.add(
        "mirror_warm",
        f"checkout() with mirror_cache (tree cache on, as by default), mirror "
        f"{ctx.new_commits} commits behind: catch-up fetch over the network + init + "
        "alternates + checkout of the new tip into the workspace (a miss: the tree cache is "
        "filled in the background, see mirror_warm_tree_cache_fill)",
    )
    fill = ctx.add(
        "mirror_warm_tree_cache_fill",
        "off the job's path: how long the tree cache's background fill of mirror_warm's "
        "commit (a second checkout from the mirror into a directory renamed into the cache) "
        "went on after mirror_warm's checkout returned",
    )
    warm_nc = ctx.add(
        "mirror_warm_no_tree_cache",
        "the same with tree_cache=False: catch-up fetch + init + alternates + checkout only",
    )
    base = ctx.add(
        "worktree_add_from_mirror",
        "baseline: git -C <mirror> worktree add --detach <dir> <new tip> (same local mirror, "
        "no network)",
    )
    fetch = ctx.add(
        "mirror_catch_up_fetch",
        f"git fetch --prune origin in the runner's mirror, {ctx.new_commits} commits "
        "behind: the part of mirror_warm that worktree_add_from_mirror does not pay",
    )
    hit = ctx.add(
        "tree_cache_hit",
        "checkout() again at a commit this runner checked out before (defaults, as root): "
        "an overlay mount over the cached pristine tree, no git, no copy",
    )
    hit_copy = ctx.add(
        "tree_cache_hit_copy",
        "the same with tree_overlay=False (or a runner that cannot mount): a copy of the "
        "cached pristine tree (cp -a --reflink=auto)",
    )
    home = ctx.tmp / "mirror-home"
    settings = ctx.settings(home, mirror_cache=True)
    no_cache = ctx.settings(home, mirror_cache=True, tree_cache=False)
    copying = ctx.settings(home, mirror_cache=True, tree_overlay=False)
    mirror = mirror_path(settings.resolved_mirror_root, ctx.url)
    req = CheckoutRequest(ctx.url, ctx.tip, ctx.tmp / "mirror-first")
    _timed_checkout(ctx, first, req, settings, "mirror")  # one of the ONCE series
    for i in range(ctx.repeat):
        _new_commits(ctx, mirror)
        req = CheckoutRequest(ctx.url, ctx.tip, ctx.tmp / f"mirror-warm-{i}")
        _timed_checkout(ctx, warm, req, settings, "mirror", fill)
        wt = ctx.tmp / f"worktree-{i}"
        add = ("-C", str(mirror), "worktree", "add", "-q", "--detach", str(wt), ctx.tip)
        measure(ctx.proxy, base, partial(git, *add))
        _expect(git("-C", str(wt), "rev-parse", "HEAD"), ctx.tip, base.name)
        git("-C", str(mirror), "worktree", "remove", "--force", str(wt))
        req = CheckoutRequest(ctx.url, ctx.tip, ctx.tmp / f"tree-hit-{i}")
        _timed_checkout(ctx, hit, req, settings, "cache")
        req = CheckoutRequest(ctx.url, ctx.tip, ctx.tmp / f"tree-hit-copy-{i}")
        _timed_checkout(ctx, hit_copy, req, copying, "cache")

        _new_commits(ctx, mirror)
        req = CheckoutRequest(ctx.url, ctx.tip, ctx.tmp / f"mirror-warm-nc-{i}")
        _timed_checkout(ctx, warm_nc, req, no_cache, "mirror")
        _new_commits(ctx, mirror)
        measure(
            ctx.proxy, fetch, partial(git, "-C", str(mirror), "fetch", "-q", "--prune", "origin")
        )
    rmtree(home)


def proxy_check(ctx: Ctx, daemon: GitDaemon) -> dict[str, Any]:
    """What the proxy itself costs: the same operations straight to the daemon."""
    direct = daemon.url(REPO_NAME)

    def timed(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    ls_direct = [timed(lambda: git("ls-remote", direct)) for _ in range(5)]
    ls_proxy = [timed(lambda: git("ls-remote", ctx.url)) for _ in range(5)]
    dest = ctx.tmp / "direct-clone"
    clone_direct = timed(lambda: git("clone", "-q", direct, str(dest)))
    rmtree(dest)
    proxied = ctx.series["full_clone"].summary().get("median_s")
    return {
        "description": "the proxy's own cost: the same git operations straight to the daemon "
        "port (not counted in any series)",
        "ls_remote_direct_median_s": round(statistics.median(ls_direct), 4),
        "ls_remote_via_proxy_median_s": round(statistics.median(ls_proxy), 4),
        "full_clone_direct_s (one run)": round(clone_direct, 3),
        "full_clone_via_proxy_median_s": proxied,
    }


# -- report ------------------------------------------------------------------------------------


def _med(series: dict[str, dict[str, Any]], name: str, key: str = "median_s") -> Any:
    return series.get(name, {}).get(key)


def targets(series: dict[str, dict[str, Any]], tip_packed: int | None = None) -> dict[str, Any]:
    """The design's checkout targets; each time target on the default configuration (tree
    cache on) and, as ``git_path_only_*``, with the tree cache off."""
    cold, cold_nc = (
        _med(series, "network_shallow_partial"),
        _med(series, "network_shallow_partial_no_tree_cache"),
    )
    warm, warm_nc = _med(series, "mirror_warm"), _med(series, "mirror_warm_no_tree_cache")
    wt, hit = _med(series, "worktree_add_from_mirror"), _med(series, "tree_cache_hit")
    bytes_ratio = ratio(
        _med(series, "full_clone", "median_bytes"),
        _med(series, "network_shallow_partial", "median_bytes"),
    )
    warm_bytes = _med(series, "mirror_warm", "median_bytes")
    floor = ratio(_med(series, "network_shallow_partial", "median_bytes"), tip_packed)
    over_wt, over_wt_nc = ratio(warm, wt), ratio(warm_nc, wt)
    speedup, speedup_nc = ratio(cold, warm), ratio(cold_nc, warm_nc)
    overhead = None if warm_nc is None or wt is None else round(warm_nc - wt, 4)
    fill = None if warm is None or warm_nc is None else round(warm - warm_nc, 4)
    return {
        "shallow_partial_at_the_floor_le_1.05x_tip_packed": {
            "series": "network_shallow_partial.median_bytes / repo.tip_packed_bytes (a pack of "
            "the tip commit and every object it reaches: what any depth-1 checkout must move)",
            "value": floor,
            "tip_packed_bytes": tip_packed,
            "target": TARGET_FLOOR_RATIO,
            "holds": floor is not None and floor <= TARGET_FLOOR_RATIO,
        },
        "shallow_partial_ge_10x_fewer_bytes_than_full_clone": {
            "series": "full_clone.median_bytes / network_shallow_partial.median_bytes",
            "value": bytes_ratio,
            "target": TARGET_BYTES_RATIO,
            "holds": bytes_ratio is not None and bytes_ratio >= TARGET_BYTES_RATIO,
        },
        "warm_mirror_le_1MB_over_network": {
            "series": "mirror_warm.median_bytes (both directions)",
            "value_bytes": warm_bytes,
            "max_bytes": max(
                (r["bytes"] for r in series.get("mirror_warm", {}).get("runs", [])),
                default=None,
            ),
            "target_bytes": TARGET_WARM_BYTES,
            "holds": warm_bytes is not None and warm_bytes <= TARGET_WARM_BYTES,
        },
        "warm_mirror_le_1.2x_worktree_add": {
            "series": "mirror_warm.median_s / worktree_add_from_mirror.median_s",
            "value": over_wt,
            "target": TARGET_WARM_OVER_WORKTREE,
            "holds": over_wt is not None and over_wt <= TARGET_WARM_OVER_WORKTREE,
            "git_path_only_value": over_wt_nc,
            "git_path_only_holds": over_wt_nc is not None
            and over_wt_nc <= TARGET_WARM_OVER_WORKTREE,
            "git_path_overhead_s": overhead,
            "tree_cache_fill_s": fill,
            "catch_up_fetch_s": _med(series, "mirror_catch_up_fetch"),
            "background_fill_s": _med(series, "mirror_warm_tree_cache_fill"),
            "note": "mirror_warm_no_tree_cache - worktree_add is the git path's fixed cost, "
            "nearly all of it the catch-up fetch (catch_up_fetch_s: connecting, the server's "
            "upload-pack, its pack of the new commits, index-pack and the connectivity "
            "check), which worktree_add, run on the caught-up mirror, does not pay: 1.2x "
            "holds once writing the tree takes 5x that. On a miss with the tree cache on the "
            "job's tree comes straight from the mirror and the cache is filled in the "
            "background (background_fill_s, after the checkout returned), so "
            "tree_cache_fill_s (mirror_warm - mirror_warm_no_tree_cache) is noise around 0",
        },
        "tree_cache_fill_off_the_path_le_1.1x_cache_off": {
            "series": "mirror_warm.median_s / mirror_warm_no_tree_cache.median_s (a miss: the "
            "cache on costs the job nothing when its tree is filled in the background)",
            "value": ratio(warm, warm_nc),
            "target": TARGET_FILL_OFF_PATH,
            "holds": warm is not None
            and warm_nc is not None
            and warm <= TARGET_FILL_OFF_PATH * warm_nc,
        },
        "warm_mirror_ge_5x_faster_than_cold_shallow (issue's original, superseded)": {
            "series": "network_shallow_partial.median_s / mirror_warm.median_s",
            "value": speedup,
            "target": TARGET_WARM_SPEEDUP,
            "holds": speedup is not None and speedup >= TARGET_WARM_SPEEDUP,
            "git_path_only_value": speedup_nc,
            "git_path_only_holds": speedup_nc is not None and speedup_nc >= TARGET_WARM_SPEEDUP,
            "upper_bound": ratio(cold_nc, wt),
            "note": "both paths write the whole tip tree, so the warm path can be at most "
            "(cold time / time to write the tree) faster; upper_bound = "
            "network_shallow_partial_no_tree_cache / worktree_add_from_mirror is that ceiling "
            "on this repo (the design supersedes this target with the 1.2x one)",
        },
        "tree_cache_hit_lt_0.5s": {
            "series": "tree_cache_hit.median_s (same commit again on the same runner)",
            "value_s": hit,
            "target_s": TARGET_TREE_HIT_S,
            "holds": hit is not None and hit < TARGET_TREE_HIT_S,
        },
    }


_COLORS = {
    "full_clone": "tab:red",
    "network_shallow_partial": "tab:orange",
    "network_shallow_partial_no_tree_cache": "navajowhite",
    "network_shallow_no_filter_no_tree_cache": "tab:olive",
    "mirror_first_time": "tab:grey",
    "mirror_warm": "tab:green",
    "mirror_warm_tree_cache_fill": "darkseagreen",
    "mirror_warm_no_tree_cache": "yellowgreen",
    "mirror_catch_up_fetch": "lightsteelblue",
    "worktree_add_from_mirror": "tab:blue",
    "tree_cache_hit": "tab:purple",
    "tree_cache_hit_copy": "plum",
}


def plot(path: Path, series: dict[str, dict[str, Any]]) -> None:
    plt = pyplot()
    names = list(series)[::-1]  # top to bottom in run order
    colors = [_COLORS.get(n, "tab:cyan") for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(16, 0.55 * len(names) + 1.8), sharey=True)
    secs = [series[n]["median_s"] for n in names]
    lo = [series[n]["median_s"] - series[n]["min_s"] for n in names]
    hi = [series[n]["max_s"] - series[n]["median_s"] for n in names]
    ax1.barh(names, secs, color=colors, xerr=[lo, hi], capsize=3)
    for y, (v, up) in enumerate(zip(secs, hi, strict=True)):
        ax1.annotate(
            f"{v:.2f} s", (v + up, y), xytext=(4, 0), textcoords="offset points", va="center"
        )
    ax1.set_xlim(0, max(v + h for v, h in zip(secs, hi, strict=True)) * 1.15)
    ax1.set_xlabel("wall time, s (median; error bars: min to max)")
    ax1.set_title(f"wall time per checkout ({series[names[0]]['n']} runs each)")
    floor = 1 / 1024  # 1 KiB, in MiB: zero-byte (local) series sit on the axis
    mib = [max(series[n]["median_bytes"] / MIB, floor) for n in names]
    ax2.barh(names, mib, color=colors)
    for y, (n, v) in enumerate(zip(names, mib, strict=True)):
        b = series[n]["median_bytes"]
        text = f"{v:.1f} MiB" if v >= 1 else (f"{b / 1024:.1f} KiB" if b else "0 B (local)")
        ax2.annotate(text, (v, y), xytext=(4, 0), textcoords="offset points", va="center")
    ax2.axvline(TARGET_WARM_BYTES / MIB, color="grey", linestyle=":", linewidth=1)
    ax2.set_xscale("log")
    ax2.set_xlim(floor, max(mib) * 8)
    ax2.set_xlabel("bytes over loopback, MiB (median, both directions; log scale)")
    ax2.set_title("network bytes per checkout (dotted: 1 MB)")
    for ax in (ax1, ax2):
        ax.grid(True, axis="x", which="major", alpha=0.3)
    save_figure(fig, path)


def build_report(
    args: argparse.Namespace,
    sizes: dict[str, Any],
    gen_s: float,
    ctx: Ctx,
    proxy_cost: dict[str, Any],
) -> dict[str, Any]:
    series = {name: s.summary() for name, s in ctx.series.items()}
    headline = [
        f"repo: {sizes['commits']} commits, history {sizes['history_pack_mib']} MiB packed, "
        f"tip {sizes['tip_files']} files / {sizes['tip_mib']} MiB, "
        f"{sizes['tip_packed_bytes'] / MIB:.1f} MiB packed (the floor of a depth-1 checkout)"
    ] + [
        f"{name}: median {s['median_s']:.3f} s, {s['median_bytes'] / MIB:.3f} MiB over the network"
        + (
            f" ({s['median_bytes'] / sizes['tip_packed_bytes']:.2f}x the floor)"
            if name.startswith("network_") and sizes.get("tip_packed_bytes")
            else ""
        )
        for name, s in series.items()
    ]
    return {
        "parameters": {
            "commits": args.commits,
            "files": args.files,
            "blob_kb": args.blob_kb,
            "binaries": args.binaries,
            "binary_every": args.binary_every,
            "edits_per_commit": args.edits,
            "new_commits_for_warm_mirror": args.new_commits,
            "new_commits_content": "text-only edits (edits_per_commit files each), no binaries",
            "repeat": args.repeat,
            "series_run_once": list(ONCE),
            "seed": args.seed,
            "server": "git daemon (ci_pool.embedded.GitDaemon) on 127.0.0.1, protocol v2, "
            "repo repacked once with bitmaps, uploadpack.allowFilter and allowAnySHA1InWant",
            "network": "loopback through a byte-counting TCP proxy thread in this process",
            "caches": "OS page cache not dropped (not possible without root): every run reads "
            "the server's pack and the mirror from memory; only the network bytes are cold",
        },
        "headline": headline,
        "repo": {**sizes, "generate_s": round(gen_s, 1)},
        "series": series,
        "ratios": {
            "full_clone_over_shallow_partial_bytes": ratio(
                _med(series, "full_clone", "median_bytes"),
                _med(series, "network_shallow_partial", "median_bytes"),
            ),
            "full_clone_over_shallow_partial_seconds": ratio(
                _med(series, "full_clone"), _med(series, "network_shallow_partial")
            ),
            "shallow_no_filter_over_shallow_partial_bytes": ratio(
                _med(series, "network_shallow_no_filter_no_tree_cache", "median_bytes"),
                _med(series, "network_shallow_partial_no_tree_cache", "median_bytes"),
            ),
            "cold_shallow_partial_over_mirror_warm_seconds": ratio(
                _med(series, "network_shallow_partial"), _med(series, "mirror_warm")
            ),
            "mirror_warm_over_worktree_add_seconds": ratio(
                _med(series, "mirror_warm"), _med(series, "worktree_add_from_mirror")
            ),
            "mirror_warm_no_tree_cache_over_worktree_add_seconds": ratio(
                _med(series, "mirror_warm_no_tree_cache"),
                _med(series, "worktree_add_from_mirror"),
            ),
            "tree_cache_fill_share_of_cold_network_checkout": ratio(
                None
                if _med(series, "network_shallow_partial") is None
                else _med(series, "network_shallow_partial")
                - _med(series, "network_shallow_partial_no_tree_cache"),
                _med(series, "network_shallow_partial"),
            ),
        },
        "targets": targets(series, sizes.get("tip_packed_bytes")),
        "proxy_check": proxy_cost,
    }


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--commits", type=int, default=1500, help="history length (default 1500)")
    ap.add_argument("--files", type=int, default=1500, help="files at the tip (default 1500)")
    ap.add_argument(
        "--blob-kb", type=int, default=300, help="size of each binary blob, KiB (default 300)"
    )
    ap.add_argument("--binaries", type=int, default=64, help="binary files at the tip (default 64)")
    ap.add_argument(
        "--binary-every",
        type=int,
        default=1,
        help="one binary replaced every N commits (default 1)",
    )
    ap.add_argument("--edits", type=int, default=4, help="text files edited per commit")
    ap.add_argument("--new-commits", type=int, default=10, help="commits the warm mirror is behind")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per series (median reported); full_clone and mirror_first_time run once",
    )
    ap.add_argument("--seed", type=int, default=1)
    add_common_args(ap, "checkout")
    args = ap.parse_args(argv)
    if args.quick:
        args.commits, args.files, args.blob_kb, args.binaries = 60, 120, 32, 8
        args.new_commits, args.repeat = 3, 1
    if args.commits < 2 or args.files < args.binaries + 2 or args.repeat < 1:
        ap.error("need --commits >= 2, --files >= --binaries + 2 and --repeat >= 1")
    if args.binary_every < 1 or args.new_commits < 1 or args.blob_kb < 1:
        ap.error("--binary-every, --new-commits and --blob-kb must be at least 1")
    return args


def run(bench: Bench) -> None:
    args, tmp = bench.args, bench.tmp
    base = tmp / "srv"
    base.mkdir()
    bare = base / REPO_NAME
    gen = RepoGenerator(
        files=args.files,
        binaries=args.binaries,
        blob_kb=args.blob_kb,
        edits_per_commit=args.edits,
        binary_every=args.binary_every,
        seed=args.seed,
    )
    log(f"generating {args.commits} commits, {args.files} files in {bare}")
    t0 = time.monotonic()
    tip = gen.create(bare, args.commits)
    gen_s = time.monotonic() - t0
    sizes = repo_sizes(bare, tip)
    log(
        f"generated in {gen_s:.1f} s: history {sizes['history_pack_mib']} MiB packed, "
        f"tip {sizes['tip_files']} files / {sizes['tip_mib']} MiB"
    )
    daemon = bench.git_daemon(base)
    proxy = ByteCountingProxy(daemon.port)
    bench.defer(proxy)
    config = tmp / "ci-pool.toml"
    config.write_text("# written by bench/checkout.py: defaults only\n")
    ctx = Ctx(
        tmp, bare, gen, proxy, proxy.url(REPO_NAME), tip, config, args.repeat, args.new_commits
    )
    log(f"git daemon 127.0.0.1:{daemon.port}, clients via proxy {ctx.url}")

    log("full clone")
    run_full_clone(ctx)
    log("ci-pool network checkout, depth 1, filter blob:none (defaults)")
    run_network(
        ctx,
        "network_shallow_partial",
        "checkout() with defaults on a fresh runner: git init + fetch --depth=1 "
        "--filter=blob:none <sha> + checkout (the tip's blobs fetched lazily, one batch) "
        "into the tree cache, the job's workspace an overlay of it (no copy)",
    )
    log("ci-pool network checkout, depth 1, filter blob:none, no tree cache")
    run_network(
        ctx,
        "network_shallow_partial_no_tree_cache",
        "the same with tree_cache=False: git init + fetch + checkout only",
        tree_cache=False,
    )
    log("ci-pool network checkout, depth 1, no filter, no tree cache")
    run_network(
        ctx,
        "network_shallow_no_filter_no_tree_cache",
        'checkout() with checkout_filter="" and tree_cache=False: git init + fetch --depth=1 '
        "<sha> (blobs in the same pack) + checkout",
        checkout_filter="",
        tree_cache=False,
    )
    log("ci-pool mirror: first time, warm (behind), worktree add baseline, tree-cache hit")
    run_mirror(ctx)
    log("proxy check: the same operations without the proxy")
    proxy_cost = proxy_check(ctx, daemon)

    report = build_report(args, sizes, gen_s, ctx, proxy_cost)
    bench.write(report, lambda png: plot(png, report["series"]))


def main(argv: Sequence[str] | None = None) -> int:
    with Bench("checkout", parse_args(argv)) as bench:
        run(bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
