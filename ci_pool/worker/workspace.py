"""An attempt's directory on the runner: checking the repo out, collecting artifacts, removal."""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from ci_pool import defaults, overlay
from ci_pool.core.masking import Masker
from ci_pool.core.names import check_ref
from ci_pool.core.specs import CheckoutSpec, StepSpec
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import CheckoutError, InputError, SyncRefused
from ci_pool.git import CheckoutRequest, GitRunner, checkout, clone_credential, resolve_ref
from ci_pool.settings import Settings
from ci_pool.store.models import utcnow
from ci_pool.worker import artifacts, scratch
from ci_pool.worker.attempt import Attempt
from ci_pool.worker.runner_store import RunnerStore
from ci_pool.worker.sync import apply_patch, check_payload, unpack_snapshot


def check_out(att: Attempt, workspace: Path, settings: Settings) -> None:
    """The implicit checkout of a job none of whose steps is a checkout: the job's commit
    (or its checkout's own ref) into the workspace, before the first step."""
    job, options = att.job, att.job.checkout
    if any(step.checkout is not None for step in job.steps):
        workspace.mkdir(parents=True, exist_ok=True)
        return
    t0 = time.monotonic()
    if _synced(att, workspace, settings, before=True):
        att.note(commit_sha=job.commit_sha, checkout_s=round(time.monotonic() - t0, 3))
        return
    commit = job.commit_sha or job.ref
    if options.ref is not None:
        # The checkout's own ref replaces the job's commit; submit pins it to a commit
        # where refs are resolved, else it is resolved here as the job's ref would be.
        try:
            commit = resolve_ref(job.repo, options.ref, settings)
        except InputError as exc:
            raise CheckoutError(f"checkout ref {options.ref!r}: {exc}") from None
    att.logw.line(f"##[ci-pool] checkout {job.repo} {commit}")
    result = checkout(
        CheckoutRequest(
            repo=job.repo,
            commit=commit,
            dest=workspace,
            fetch_depth=options.fetch_depth,
            submodules=options.submodules,
            lfs=options.lfs,
            # The overlay's upper and work directories go straight into the attempt's
            # directory (one mkdir less per job than a layers/ directory around them).
            layers=None if att.workspace_mounted else workspace.parent,
        ),
        settings,
        log=lambda line: att.logw.line(f"##[ci-pool] {line}"),
    )
    _synced(att, workspace, settings, before=False)
    att.note(
        commit_sha=result.sha,
        checkout_s=round(time.monotonic() - t0, 3),
        checkout_via=result.via,
    )


def _synced(att: Attempt, dest: Path, settings: Settings, *, before: bool) -> bool:
    """The job's local changes (``--sync``) at its own checkout: a snapshot replaces the
    clone (``before``, True when unpacked), a patch goes on it (after). SyncRefused when
    they cannot be applied (the log says why)."""
    sync = att.job.checkout.sync
    if sync is None or before != (sync.mode == "snapshot"):
        return False
    data = check_payload(sync, att.sync_data)
    short = sync.sha256[:12]
    try:
        if sync.mode == "snapshot":
            count = unpack_snapshot(data, dest, settings.sync_max_bytes)
            att.logw.line(f"##[ci-pool] sync: unpacked snapshot {short} ({count} entries)")
        else:
            count = apply_patch(data, dest)
            att.logw.line(f"##[ci-pool] sync: applied patch {short} ({count} file(s))")
    except SyncRefused as exc:
        att.logw.line(f"##[ci-pool] sync: {exc}")
        raise
    att.note(sync_mode=sync.mode, sync_sha256=sync.sha256)
    return True


def run_checkout(
    att: Attempt,
    index: int,
    step: StepSpec,
    ctx: dict[str, Any],
    status: str,
    settings: Settings,
    scripts_path: str,
) -> int:
    """A checkout step at its place among the steps: 0, or 1 with the reason in the log
    for what the job itself got wrong (a ref it renders, a path it made a symlink).
    Infra failures (the server, git) raise CheckoutError, as the implicit checkout does."""
    options, job, logw = step.checkout, att.job, att.logw
    assert options is not None and att.workspace is not None
    t0 = time.monotonic()
    try:
        url = options.repo_url(job.repo)
        commit = _commit(att, url, options, ctx, status, settings)
        dest = _target(att.workspace, options.path)
        if options.clean:
            _empty(dest)
    except (ValueError, InputError) as exc:
        logw.line(f"##[ci-pool] step {index} checkout refused: {exc}")
        return 1
    own = url == job.repo and options.ref is None
    try:
        if own and _synced(att, dest, settings, before=True):
            att.note(commit_sha=job.commit_sha, checkout_s=round(time.monotonic() - t0, 3))
            return 0
    except SyncRefused:
        return 1  # the log says why
    into = f" into {options.path}" if options.path else ""
    logw.line(f"##[ci-pool] checkout {url} {commit}{into}")
    result = checkout(
        CheckoutRequest(
            repo=url,
            commit=commit,
            dest=dest,
            fetch_depth=options.fetch_depth,
            submodules=options.submodules,
            lfs=options.lfs,
            filter=options.filter,
            sparse=options.sparse_checkout,
            cone=options.sparse_checkout_cone_mode,
            layers=_step_layers(att, index, dest),
        ),
        settings,
        log=lambda line: logw.line(f"##[ci-pool] {line}"),
    )
    if own:
        try:
            _synced(att, dest, settings, before=False)
        except SyncRefused:
            return 1
    if options.persist_credentials:
        _persist_credential(att, index, url, dest, settings, scripts_path)
    took = round(time.monotonic() - t0, 3)
    if url == job.repo and att.evidence.commit_sha is None:
        att.note(commit_sha=result.sha, checkout_via=result.via)
    att.note(checkout_s=round((att.evidence.checkout_s or 0) + took, 3))
    return 0


def _step_layers(att: Attempt, index: int, dest: Path) -> Path | None:
    """Where a checkout step's overlay layers go, or None for a copy of the cached tree.
    A container sees only what was mounted before it started, so an overlay mounted by a
    step is for host jobs; an empty ``dest`` is needed as the mount point."""
    assert att.workspace is not None
    if att.evidence.mode != "host" or any(dest.iterdir()):
        return None
    return att.workspace.parent / defaults.OVERLAY_LAYERS_DIR / f"step-{index}"


def _commit(
    att: Attempt,
    url: str,
    options: CheckoutSpec,
    ctx: dict[str, Any],
    status: str,
    settings: Settings,
) -> str:
    """The commit to check out: the job's own for its repository, the default branch of
    another, or the (rendered) ``ref``, pinned to a commit now."""
    job = att.job
    ref = options.ref
    if ref is not None and "${{" in ref:
        rendered = expressions.render(ref, ctx, status)
        try:
            ref = check_ref(rendered)
        except ValueError as exc:
            raise ValueError(f"ref {rendered!r} (from {options.ref}) {exc}") from None
    if ref is None:
        return (job.commit_sha or job.ref) if url == job.repo else "HEAD"
    try:
        return resolve_ref(url, ref, settings)
    except InputError as exc:
        raise InputError(f"ref {ref!r}: {exc}") from None


def _target(workspace: Path, rel: str) -> Path:
    """The directory ``rel`` of the workspace, made where missing. Every part must be a
    real directory: a symlink an earlier step left there is refused, never followed."""
    here = workspace
    for part in (p for p in rel.split("/") if p):
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            here.mkdir()
            continue
        if not stat.S_ISDIR(mode):
            raise ValueError(
                f"path {rel!r}: {here.relative_to(workspace)} is a symlink or a file, "
                "not a directory"
            )
    return here


def _empty(dest: Path) -> None:
    """``clean``: remove what is in ``dest`` (links themselves, never their targets)."""
    for entry in os.scandir(dest):
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError as exc:
            raise ValueError(
                f"clean: could not remove {entry.name!r} ({exc.strerror}); set clean: false "
                "or check out into another path"
            ) from None


def _persist_credential(
    att: Attempt, index: int, url: str, dest: Path, settings: Settings, scripts_path: str
) -> None:
    """``persist-credentials: true``: a credential helper in the checkout's git config for
    the clone's own credential. The credential sits in the job's read-only scripts
    directory, which is removed with the job; the helper names only that file, and the
    log masks the credential from here on."""
    found = clone_credential(settings, url)
    if found is None:
        att.logw.line("##[ci-pool] persist-credentials: the clone used no credential")
        return
    user, password = found
    assert att.dirs is not None
    name = defaults.CREDENTIAL_FILE.format(n=index)
    att.dirs.scripts.create(name, f"username={user}\npassword={password}\n".encode())
    att.logw.masker = Masker([*att.secrets.values(), password, f"{user}:{password}"])
    helper = f"!f() {{ test \"$1\" = get && cat '{scripts_path}/{name}'; }}; f"
    GitRunner.for_settings(settings, url).run(
        "-C", str(dest), "config", f"credential.{url}.helper", helper
    )
    att.logw.line("##[ci-pool] persist-credentials: a credential helper is set for this job")


def collect_artifacts(
    att: Attempt, workspace: Path, settings: Settings, store: RunnerStore
) -> None:
    """Copy the job's artifact paths out of the workspace and record them."""
    job = att.job
    dest = settings.resolved_artifact_root / job.id / str(job.attempt)
    # Named artifacts (``actions/upload-artifact``) of this attempt keep their names and
    # count against the same limit.
    uploaded = store.artifacts(job.id, job.attempt)
    sel = artifacts.Selection(tuple(job.artifacts), skip=frozenset(a.path for a in uploaded))
    left = max(0, settings.artifact_max_bytes - sum(a.size for a in uploaded))
    found = artifacts.collect_selection(workspace, sel, dest, left)
    for problem in found.problems:
        att.logw.line(f"##[ci-pool] artifacts: {problem}")
    for f in found.files:
        att.logw.line(f"##[ci-pool] artifact {f.path} ({f.size} bytes, sha256 {f.sha256})")
    store.add_artifacts(job.id, job.attempt, found.files)
    if found.files:
        expires = utcnow() + timedelta(days=settings.artifact_days(None))
        store.add_artifact_set(job.pipeline_id or job.id, job.id, job.attempt, expires)
    att.note_artifacts(found.files)


def sweep_overlays(workspace_root: Path, alive: Callable[[str, int], bool]) -> list[str]:
    """Unmount and remove the overlay workspaces of ended attempts (a worker killed before
    its cleanup ran); ``alive(job_id, attempt)`` says which attempts still run. Returns
    the attempt directories swept."""
    swept: list[str] = []
    scratch.sweep(workspace_root)  # the scratch mounts of runner processes that are gone
    attempts = {
        point.relative_to(workspace_root).parts[0]
        for point in overlay.mounted_under(workspace_root)
        if point != workspace_root
    }
    for name in sorted(attempts):
        job_id, _, attempt = name.rpartition("-")
        if not job_id or not attempt.isdigit() or alive(job_id, int(attempt)):
            continue
        if overlay.unmount_under(workspace_root / name):
            continue
        shutil.rmtree(workspace_root / name, ignore_errors=True)
        swept.append(name)
    return swept
