"""Fetching repository actions (``owner/repo[/path]@ref``) from ``actions_url`` or the host a
``uses:`` URL names: the URL passes the same checks as a checkout's repository, the ref is
resolved to a commit (recorded in the job's evidence), the commit's tree comes from the
runner's cache (``cache.ActionCache``) and is copied into the job's read-only scripts
directory, where its steps see it as ``$GITHUB_ACTION_PATH``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ci_pool import defaults
from ci_pool.core.actions import ActionRef, pin_problem
from ci_pool.core.capabilities import Capability
from ci_pool.core.names import check_repo_url, is_sha
from ci_pool.exceptions import ActionError, CheckoutError, InputError
from ci_pool.git import GitRunner, resolve_ref
from ci_pool.settings import Settings
from ci_pool.worker.actions.cache import ActionCache, copy_tree
from ci_pool.worker.actions.load import LoadedAction, read_action_files

if TYPE_CHECKING:
    from ci_pool.worker.actions.call import ActionCall


def action_url(ref: ActionRef, settings: Settings) -> str:
    """The repository URL of a repository action, checked as a checkout's repository is
    (``check_repo_url``); the server itself is checked when git is set up for it."""
    base = ref.base_url or settings.actions_url
    if not base:
        raise ActionError(
            f"action {ref}: this pool has no actions_url; set actions_url "
            "(CI_POOL_ACTIONS_URL) to the forge that mirrors public actions, or use a "
            "local ./path action"
        )
    url = f"{base.rstrip('/')}/{ref.owner}/{ref.repo}"
    try:
        return check_repo_url(url, allow_local=settings.allow_local_repos)
    except ValueError as exc:
        raise ActionError(f"action {ref}: {url} {exc}") from None


def check_pinned(ref: ActionRef, cap: Capability | None) -> None:
    """On a capability with ``require_pinned_actions``, refuse an action that is not pinned
    (the runner's own check; admission refused the job's own steps already, this also
    covers the actions a composite action calls)."""
    if cap is not None and cap.require_pinned_actions:
        why = pin_problem(ref)
        if why is not None:
            raise ActionError(f"{why} (capability {cap.name!r})")


def source(ref: ActionRef, settings: Settings, cap: Capability | None) -> tuple[str, GitRunner]:
    """Where a repository action comes from and git set up for that server, after every
    check that needs no connection: the pin policy, the URL, ``git_hosts`` and the
    server's addresses (ActionError, before anything is contacted)."""
    check_pinned(ref, cap)
    url = action_url(ref, settings)
    try:
        return url, GitRunner.for_settings(settings, url)
    except (InputError, CheckoutError) as exc:  # RemoteRefused: no connection was made
        raise ActionError(f"action {ref}: {str(exc).removeprefix('repo: ')}") from None


def resolve_commit(ref: ActionRef, url: str, settings: Settings) -> str:
    """The commit ``ref.ref`` names at ``url`` now (a full SHA stands for itself)."""
    if is_sha(ref.ref):
        return ref.ref
    try:
        return resolve_ref(url, ref.ref, settings)
    except (InputError, CheckoutError) as exc:
        message = str(exc).removeprefix("repo: ").removeprefix("ref: ")
        raise ActionError(f"action {ref}: {message}") from None


def fetch(call: ActionCall) -> LoadedAction:
    """The action ``call.ref`` names: resolved, fetched (or taken from the cache), copied
    where the job reads it and read."""
    att, ref = call.att, call.ref
    if att.settings is None or att.dirs is None:
        raise ActionError(f"action {ref}: this runner cannot fetch actions here")
    settings = att.settings
    url, git = source(ref, settings, att.cap)
    sha = resolve_commit(ref, url, settings)
    cache = ActionCache(
        settings.resolved_actions_cache,
        settings.action_max_bytes,
        keep_bytes=settings.actions_cache_max_bytes,
        keep_count=settings.actions_cache_max_count,
    )
    scripts = att.dirs.scripts.path
    rel = f"{defaults.ACTIONS_IN_SCRIPTS}/{sha}"
    copy = scripts / rel
    with cache.use(git, url, sha, str(ref)) as (entry, fetched):
        call.line(f"action {ref}: {sha} ({'fetched' if fetched else 'cached on this runner'})")
        if not copy.is_dir():
            copy_tree(entry, copy)
    att.note(actions={**(att.evidence.actions or {}), str(ref): sha})
    definition, steps = read_action_files(copy, ref.path, str(ref))
    in_job = f"{call.execution.scripts_path}/{rel}"
    if ref.path:
        in_job += f"/{ref.path}"
    return LoadedAction(ref, definition, copy / ref.path, in_job, sha, steps)
