"""An attempt's directory on the runner: checking the repo out, collecting artifacts, removal."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ci_pool.core.specs import ArtifactEntry
from ci_pool.exceptions import CheckoutError, InputError
from ci_pool.git import CheckoutRequest, checkout, resolve_ref
from ci_pool.settings import Settings
from ci_pool.store import Store
from ci_pool.worker import artifacts
from ci_pool.worker.attempt import Attempt
from ci_pool.worker.executors.base import Execution, Executor
from ci_pool.worker.logs import LogWriter


def check_out(att: Attempt, workspace: Path, settings: Settings) -> None:
    """Check the job's commit (or its checkout's own ref) out into the workspace."""
    job, options = att.job, att.job.checkout
    t0 = time.monotonic()
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
        ),
        settings,
        log=lambda line: att.logw.line(f"##[ci-pool] {line}"),
    )
    att.note(
        commit_sha=result.sha,
        checkout_s=round(time.monotonic() - t0, 3),
        checkout_via=result.via,
    )


def collect_artifacts(att: Attempt, workspace: Path, settings: Settings, store: Store) -> None:
    """Copy the job's artifact paths out of the workspace and record them."""
    job = att.job
    dest = settings.resolved_artifact_root / job.id / str(job.attempt)
    found = artifacts.collect(workspace, list(job.artifacts), dest, settings.artifact_max_bytes)
    for problem in found.problems:
        att.logw.line(f"##[ci-pool] artifacts: {problem}")
    for f in found.files:
        att.logw.line(f"##[ci-pool] artifact {f.path} ({f.size} bytes, sha256 {f.sha256})")
    store.add_artifacts(job.id, job.attempt, found.files)
    att.note(
        artifacts=tuple(
            ArtifactEntry(path=f.path, size=f.size, sha256=f.sha256) for f in found.files
        )
    )


def clean_up(
    executor: Executor | None,
    execution: Execution | None,
    root: Path,
    logw: LogWriter,
    image: str,
) -> None:
    """Close the execution and remove the attempt's directory; say what could not be."""
    # Nothing here may escape the task: what cannot be removed now (the engine went away)
    # is swept by the runner once its engine answers again.
    if execution is not None:
        try:
            execution.close()
        except Exception as exc:
            logw.line(f"##[ci-pool] cleanup: {exc}; the runner removes it later")
    shutil.rmtree(root, ignore_errors=True)
    if root.exists() and executor is not None:
        # Files the build made as another user (root in the container): remove them
        # the way they were made.
        try:
            executor.remove_tree(root, image)
        except Exception as exc:
            logw.line(f"##[ci-pool] cleanup: {exc}")
    if root.exists():
        logw.line(f"##[ci-pool] cleanup: could not remove workspace {root}")
