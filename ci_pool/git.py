"""Git: resolve a ref at submit, and check out the exact commit for a job, either shallow
and partial over the network or from a per-runner mirror used as a reference."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from ci_pool import defaults, overlay, trees
from ci_pool.core.masking import Masker
from ci_pool.core.names import is_sha
from ci_pool.core.policy import read_secret_source
from ci_pool.exceptions import CheckoutError, InputError
from ci_pool.remotes import check_remote
from ci_pool.settings import Settings

log = logging.getLogger(__name__)

#: Git must never prompt, nor read the runner's own identity or global config.
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "/bin/true",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_LFS_SKIP_SMUDGE": "1",
    "LC_ALL": "C",
}


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    repo: str
    commit: str
    dest: Path
    fetch_depth: int = 1
    submodules: bool = False
    lfs: bool = False
    #: Partial clone filter; None uses the pool's ``checkout_filter``.
    filter: str | None = None
    #: Sparse-checkout patterns (directories in cone mode); empty checks out everything.
    sparse: tuple[str, ...] = ()
    cone: bool = True
    #: An empty directory outside ``dest`` for the job's overlay layers: with it, a cached
    #: tree becomes the lower layer of an overlay mounted at ``dest`` (where the runner can
    #: mount one) instead of being copied. The caller unmounts ``dest`` when the job ends.
    layers: Path | None = None


@dataclass(frozen=True, slots=True)
class CheckoutResult:
    sha: str
    #: "network" (shallow + partial fetch), "mirror" (the runner's local mirror) or
    #: "cache" (a copy of a tree this runner checked out before).
    via: str


class GitRunner:
    """Runs git with URL rewrites and credentials in the environment (never in argv, never
    in a URL), and masks credentials out of anything it reports."""

    def __init__(
        self,
        rewrites: Mapping[str, str],
        credentials: Mapping[str, str],
        timeout: float = defaults.GIT_TIMEOUT,
        pinned: Sequence[str] = (),
    ):
        self.timeout = timeout
        # A redirect must not carry a credential to another server.
        config: list[tuple[str, str]] = [
            ("protocol.version", "2"),
            ("http.followRedirects", "false"),
        ]
        # The addresses the server was checked on are the ones curl connects to.
        config += [("http.curloptResolve", entry) for entry in pinned]
        config += [(f"url.{internal}.insteadOf", public) for public, internal in rewrites.items()]
        secrets: list[str] = []
        for prefix, source in credentials.items():
            value = read_secret_source(source, f"git credential for {prefix}")
            userpass = value if ":" in value else f"x-access-token:{value}"
            header = base64.b64encode(userpass.encode()).decode()
            config.append((f"http.{prefix}.extraHeader", f"Authorization: Basic {header}"))
            secrets += [value, userpass.partition(":")[2]]
        self.masker = Masker(secrets)
        self.env = {**os.environ, **_GIT_ENV, "GIT_CONFIG_COUNT": str(len(config))}
        for i, (key, val) in enumerate(config):
            self.env[f"GIT_CONFIG_KEY_{i}"] = key
            self.env[f"GIT_CONFIG_VALUE_{i}"] = val

    @classmethod
    def for_settings(cls, settings: Settings, repo: str) -> GitRunner:
        """A runner for one repository whose server passed ``check_remote`` (RemoteRefused,
        before any connection, otherwise), with only the credentials meant for it."""
        return cls(
            settings.git_url_rewrites,
            _credentials_for(settings, repo),
            pinned=_pins(settings, repo),
        )

    def run(
        self, *args: str, cwd: Path | None = None, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        i = 0
        while i < len(args) and args[i] in ("-C", "-c"):
            i += 2
        verb = args[i] if i < len(args) else "git"
        limit = timeout or self.timeout
        # Its own process group: on a timeout the helpers git started (git-remote-https,
        # ssh) are killed with it instead of talking to a stalled server on their own.
        with subprocess.Popen(
            ["git", *args],
            cwd=cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        ) as child:
            try:
                out, errs = child.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                _kill_group(child)
                raise CheckoutError(f"git {verb} timed out after {limit:.0f}s") from None
            except BaseException:
                _kill_group(child)
                raise
        proc = subprocess.CompletedProcess(child.args, child.returncode, out, errs)
        if check and proc.returncode != 0:
            raise CheckoutError(f"git {verb} failed: {self.masker.mask(git_error(proc.stderr))}")
        return proc


def _pins(settings: Settings, repo: str) -> list[str]:
    """``http.curloptResolve`` entries: the addresses the server was checked on (RemoteRefused,
    before any connection, for a server outside ``git_hosts``)."""
    checked = check_remote(repo, settings)
    pinned: list[str] = []
    if checked is not None and checked[0].scheme in ("http", "https"):
        remote, addresses = checked
        listed = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
        pinned.append(f"{remote.host}:{remote.port}:{listed}")
    return pinned


def _credentials_for(settings: Settings, repo: str) -> dict[str, str]:
    """The ``git_credentials`` whose prefix this repository's URL (as given, or as
    rewritten to the internal server) starts with: the only ones read for it."""
    urls = [repo]
    for public, internal in settings.git_url_rewrites.items():
        if repo.startswith(public):
            urls.append(internal + repo[len(public) :])
    return {
        prefix: source
        for prefix, source in settings.git_credentials.items()
        if any(u.startswith(prefix) for u in urls)
    }


def clone_credential(settings: Settings, repo: str) -> tuple[str, str] | None:
    """The user name and password a job's clone of ``repo`` used (the longest matching
    prefix's), for a credential helper the job may keep; None when it used none."""
    found = _credentials_for(settings, repo)
    if not found:
        return None
    prefix = max(found, key=len)
    value = read_secret_source(found[prefix], f"git credential for {prefix}")
    user, _, password = value.partition(":") if ":" in value else ("x-access-token", "", value)
    return user, password


#: Key prefix in ``remote_refs`` results for symbolic refs: "symref:HEAD" -> "refs/heads/main".
SYMREF = "symref:"


def resolve_ref(repo: str, ref: str, settings: Settings, timeout: float | None = None) -> str:
    """The commit SHA that ``ref`` names in ``repo`` right now (input errors name the field)."""
    return ref if is_sha(ref) else resolve(repo, ref, settings, timeout)[0]


def resolve(
    repo: str, ref: str, settings: Settings, timeout: float | None = None
) -> tuple[str, list[str]]:
    """The commit a branch/tag/ref name points at, and the full refs the name stands for."""
    found = remote_refs(repo, ref, settings, timeout)
    for name in (f"refs/tags/{ref}^{{}}", f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
        if name in found:
            return found[name], full_refs(ref, found)
    raise InputError(f"{ref!r} is not a branch, tag or ref of {repo}", field="ref")


def full_refs(ref: str, found: dict[str, str]) -> list[str]:
    """The full refs a submitted name stands for (a branch and a tag may share one; HEAD
    stands for the branch it points at)."""
    if SYMREF + ref in found:
        return [found[SYMREF + ref]]
    if ref.startswith("refs/"):
        return [ref] if ref in found else []
    return [n for n in (f"refs/heads/{ref}", f"refs/tags/{ref}") if n in found]


def is_local_repo(repo: str) -> bool:
    """A path or ``file://`` URL on this machine, not a server."""
    return repo.startswith(("/", ".", "file:"))


def repo_transport(repo: str) -> str:
    """How a repository is reached, for the evidence record: the URL's scheme (https, ssh,
    git, http), "file" for a path or file:// on this machine, "ssh" for user@host:path."""
    if is_local_repo(repo):
        return "file"
    scheme, sep, _ = repo.partition("://")
    return scheme.lower() if sep else "ssh"


def remote_refs(
    repo: str, ref: str, settings: Settings, timeout: float | None = None
) -> dict[str, str]:
    """``git ls-remote repo ref``: full ref name -> commit (peeled tags as ``name^{}``).

    What the server answers on failure is logged, never returned: the submitter gets one
    fixed message, so the look-up cannot be used to read other services."""
    timeout = timeout or settings.ref_lookup_timeout
    refused = InputError(
        f"could not resolve ref {ref!r} at {repo}: the server refused or did not answer",
        field="repo",
    )
    try:
        git = GitRunner.for_settings(settings, repo)
    except CheckoutError as exc:
        log.warning("git ls-remote %s %s: %s", repo, ref, exc)
        raise refused from None
    try:
        # ``<ref>^{}`` too: an annotated tag's peeled line (the commit it names) matches
        # only a pattern of its own.
        proc = git.run(
            "ls-remote", "--symref", "--end-of-options", repo, ref, f"{ref}^{{}}",
            check=False, timeout=timeout,
        )  # fmt: skip
    except CheckoutError:
        log.warning("git ls-remote %s %s: no answer within %.0fs", repo, ref, timeout)
        raise refused from None
    if proc.returncode != 0:
        why = git.masker.mask(git_error(proc.stderr))
        log.warning("git ls-remote %s %s failed: %s", repo, ref, why)
        if is_local_repo(repo):
            # A path on this machine (allowed by the operator): git's answer reveals no
            # other service, and it is the only way to know what is wrong with the path.
            raise InputError(f"cannot read {repo}: {why}", field="repo")
        raise refused
    found: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        value, _, name = line.partition("\t")
        if value.startswith("ref: "):  # a symbolic ref (HEAD): what it points at
            found[SYMREF + name] = value.removeprefix("ref: ")
        else:
            found[name] = value
    return found


def checkout(
    req: CheckoutRequest, settings: Settings, log: Callable[[str], None] = lambda _line: None
) -> CheckoutResult:
    """Check out exactly ``req.commit`` into ``req.dest``; failures are CheckoutErrors.

    With the tree cache on, a commit this runner checked out before comes from its pristine
    cached tree: an overlay over it when ``req.layers`` is given and the runner can mount
    one (one mount, whatever the tree's size), else a copy (copy-on-write where the
    filesystem can). On a miss with the mirror cache on, the job's tree comes straight from
    the mirror and the cached tree is filled in the background (``trees.fill_later``)."""
    if not (settings.tree_cache and is_sha(req.commit)):
        return _checkout(req, settings, log)
    root = trees.root(settings)
    entry = trees.entry(root, req, settings.mirror_cache)
    layers = req.layers if settings.tree_overlay else None
    if layers is not None:
        why_not = overlay.available(root)  # makes the root on its first probe
        if why_not is not None:
            log(f"workspace: copying the cached tree ({why_not})")
            layers = None
    with _locked(entry, exclusive=False):
        if (entry / "complete").exists():
            how = trees.serve(entry, req.dest, layers, settings.tree_overlay_min_bytes)
            os.utime(entry / "complete")  # recently used: evicted last
            log(f"checked out {req.commit} (cached tree, {how})")
            return CheckoutResult(req.commit, "cache")
    if settings.mirror_cache and not (req.submodules or req.lfs):
        # The job's tree comes straight from the mirror; the pristine tree for later jobs
        # is a second checkout from the same mirror, in the background: the job never
        # waits for it, and nothing the job writes can reach it. (Submodules and LFS files
        # come over the network: those are filled from the job's own checkout as before.)
        result = _checkout(req, settings, log)
        log("workspace: from the mirror; the cached tree is filled in the background")
        trees.fill_later(root, entry, partial(fill_tree, req, settings), settings.tree_cache_size)
        return result
    if layers is not None:
        # The job's own checkout fills the cache: it is made into the pristine tree, and
        # the job works on an overlay of it, so filling costs one mount and no copy.
        with _locked(entry, exclusive=True):
            fresh = not (entry / "complete").exists()
            if not fresh:
                result = CheckoutResult(req.commit, "cache")
            else:
                shutil.rmtree(entry, ignore_errors=True)
                entry.mkdir(parents=True)
                try:
                    result = _checkout(replace(req, dest=entry / "tree"), settings, log)
                except BaseException:
                    shutil.rmtree(entry, ignore_errors=True)
                    raise
                trees.record_bytes(entry)
                (entry / "complete").touch()
            how = trees.serve(entry, req.dest, layers, settings.tree_overlay_min_bytes)
            log(f"workspace: {'the new cached tree' if fresh else 'cached tree'}, {how}")
        trees.evict(root, settings.tree_cache_size)
        return result
    result = _checkout(req, settings, log)
    with _locked(entry, exclusive=True):
        if not (entry / "complete").exists():
            shutil.rmtree(entry, ignore_errors=True)
            entry.mkdir(parents=True)
            trees.copy_tree(req.dest, entry / "tree")
            trees.record_bytes(entry)
            (entry / "complete").touch()
    trees.evict(root, settings.tree_cache_size)
    return result


def fill_tree(req: CheckoutRequest, settings: Settings, dest: Path) -> None:
    """The pristine tree of ``req`` for the tree cache, written at ``dest``."""
    _checkout(replace(req, dest=dest, layers=None), settings, lambda _line: None)


def _checkout(
    req: CheckoutRequest, settings: Settings, log: Callable[[str], None]
) -> CheckoutResult:
    git = GitRunner.for_settings(settings, req.repo)
    req.dest.mkdir(parents=True, exist_ok=True)
    dest = str(req.dest)
    # No template: the sample hooks and description are 20 files written for nothing.
    git.run("init", "-q", "--template=", dest)
    git.run("-C", dest, "config", "remote.origin.url", req.repo)
    if req.sparse:
        cone = "--cone" if req.cone else "--no-cone"
        git.run("-C", dest, "sparse-checkout", "set", cone, *req.sparse)
        log(f"sparse checkout: {' '.join(req.sparse)}")
    if settings.mirror_cache:
        mirror = _refresh_mirror(git, settings.resolved_mirror_root, req.repo, req.commit, log)
        with _locked(mirror, exclusive=False):
            (req.dest / ".git" / "objects" / "info" / "alternates").write_text(
                str(mirror / "objects") + "\n"
            )
            # A commit id was checked in the mirror by _refresh_mirror; a name is looked up.
            target = req.commit if is_sha(req.commit) else _rev_parse(git, str(mirror), req.commit)
            git.run(
                "-C", dest, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", target
            )
        via = "mirror"
    else:
        fetch = ["-C", dest, "fetch", "-q", "--no-tags"]
        if req.fetch_depth:
            fetch.append(f"--depth={req.fetch_depth}")
        fetch_filter = req.filter or settings.checkout_filter
        if fetch_filter:
            fetch.append(f"--filter={fetch_filter}")
        git.run(*fetch, "--end-of-options", "origin", req.commit)
        git.run(
            "-C",
            dest,
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            "--detach",
            "FETCH_HEAD",
        )
        via = "network"
    sha = git.run("-C", dest, "rev-parse", "HEAD").stdout.strip()
    if is_sha(req.commit) and sha != req.commit:
        raise CheckoutError(f"checked out {sha}, expected {req.commit}")
    if req.submodules:
        git.run("-C", dest, "submodule", "update", "--init", "--recursive", "--depth=1")
        log("submodules updated")
    if req.lfs:
        if shutil.which("git-lfs") is None:
            raise CheckoutError(
                "the job asks for LFS files but git-lfs is not installed on this runner"
            )
        git.run("-C", dest, "lfs", "pull")
        log("LFS files fetched")
    log(f"checked out {sha} ({via})")
    return CheckoutResult(sha, via)


def mirror_path(root: Path, repo: str) -> Path:
    """One bare mirror per repository URL on each runner."""
    return root / (hashlib.sha256(repo.encode()).hexdigest()[:20] + ".git")


@contextmanager
def _locked(mirror: Path, *, exclusive: bool) -> Iterator[None]:
    """Fetches take the mirror exclusively; checkouts share it, so no job reads a mirror
    while another job's fetch rewrites its refs and packs."""
    lock = mirror.with_suffix(".lock")
    try:
        fh = open(lock, "a+b")  # closed by the with below
    except FileNotFoundError:  # the first use of the directory: made then, not every time
        mirror.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock, "a+b")
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _has_commit(git: GitRunner, mirror: str, commit: str) -> bool:
    return (
        git.run("-C", mirror, "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode == 0
    )


def _rev_parse(git: GitRunner, mirror: str, ref: str) -> str:
    proc = git.run(
        "-C",
        mirror,
        "rev-parse",
        "--verify",
        "-q",
        "--end-of-options",
        f"{ref}^{{commit}}",
        check=False,
    )
    if proc.returncode != 0:
        raise CheckoutError(f"{ref!r} is not in the mirror of the repository after a fetch")
    return proc.stdout.strip()


def _refresh_mirror(
    git: GitRunner, root: Path, repo: str, commit: str, log: Callable[[str], None]
) -> Path:
    """Create or fetch (and prune) the runner's mirror until it holds ``commit``."""
    mirror = mirror_path(root, repo)
    with _locked(mirror, exclusive=True):
        if not (mirror / "HEAD").exists():
            if mirror.exists():
                shutil.rmtree(mirror)  # a clone that died half-way
            log("creating the runner's mirror of the repository (first job here)")
            git.run("clone", "-q", "--mirror", "--end-of-options", repo, str(mirror))
        elif is_sha(commit) and _has_commit(git, str(mirror), commit):
            return mirror
        else:
            git.run("-C", str(mirror), "fetch", "-q", "--prune", "origin")
        if is_sha(commit) and not _has_commit(git, str(mirror), commit):
            # Not under any ref (a pull request head, a force-pushed branch): ask for it.
            git.run("-C", str(mirror), "fetch", "-q", "origin", "--end-of-options", commit)
    return mirror


def _kill_group(child: subprocess.Popen[str]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


#: git's error lines start with one of these; lines without one continue the last message.
_GIT_MESSAGE_PREFIXES = ("fatal:", "error:", "warning:", "remote:", "hint:")


def git_error(text: str, limit: int = 1000) -> str:
    """git's whole error on one line: each ``fatal:``/``error:`` message with its
    continuation lines ("Please make sure ... and the repository exists."), joined by "; "
    and capped at ``limit`` characters. Progress lines (``\r``) are dropped."""
    messages: list[str] = []
    for raw in text.split("\n"):
        line = raw.rsplit("\r", 1)[-1].strip()
        if not line:
            continue
        if messages and not line.startswith(_GIT_MESSAGE_PREFIXES):
            messages[-1] += " " + line
        else:
            messages.append(line)
    whole = "; ".join(messages) or "no output"
    return whole if len(whole) <= limit else whole[: limit - 3] + "..."
