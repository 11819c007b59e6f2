"""Checkouts at submit: every repository and ref a job checks out, held to its capability's
rules and pinned to the commit it names now; local changes (``--sync``) checked too."""

from __future__ import annotations

from ci_pool.core.capabilities import Capability
from ci_pool.core.names import check_repo_url, is_sha
from ci_pool.core.policy import Submitter, check_policy
from ci_pool.core.specs import CheckoutSpec, JobSpec
from ci_pool.core.sync import signature_refusal
from ci_pool.exceptions import InputError, PolicyDenied
from ci_pool.git import resolve
from ci_pool.remotes import LookupLimit, check_remote
from ci_pool.settings import Settings
from ci_pool.store import Store


class CheckoutAdmission:
    """Ref look-ups (bounded by ``lookups``) and the checks of a job's checkouts."""

    def __init__(self, settings: Settings, store: Store, lookups: LookupLimit) -> None:
        self.settings = settings
        self.store = store
        self.lookups = lookups

    def locate(self, repo: str, ref: str, strict: bool) -> tuple[str | None, list[str] | None]:
        """The commit ``ref`` points at (when refs are resolved) and, for capabilities with
        a ref allowlist (``strict``), the full refs it stands for."""
        if is_sha(ref):
            return ref, None
        if not (self.settings.resolve_refs or strict):
            return None, None
        if not self.settings.resolve_refs:  # the allowlist can only judge a full ref
            return None, [ref] if ref.startswith("refs/") else None
        with self.lookups.slot():
            sha, refs = resolve(repo, ref, self.settings)
        return sha, refs

    def check_sync(self, spec: JobSpec, cap: Capability, field: str) -> None:
        """Local changes only on the job's own checkout, only where the capability does not
        require signed submissions, and only a payload the store holds."""
        for i, step in enumerate(spec.steps):
            if step.checkout is not None and step.checkout.sync is not None:
                raise InputError(
                    "local changes belong to the job's own checkout, not a checkout step",
                    field=f"steps.{i}.checkout.sync",
                )
        sync = spec.checkout.sync
        if sync is None:
            return
        if cap.require_signature:
            raise InputError(signature_refusal(cap.name), field=field)
        if not self.store.has_sync_payload(sync):
            raise InputError(
                f"no {sync.mode} with sha256 {sync.sha256} was uploaded: upload it first "
                "(POST /v1/sync), or submit with the CLI's --sync",
                field=field,
            )

    def admit(self, spec: JobSpec, cap: Capability, who: Submitter, path: str) -> JobSpec:
        """Every checkout of a job (the implicit one, and each checkout step) held to the
        capability's rules like the job's own repository and ref, its server to
        ``git_hosts``, and pinned to the commit it names now (where refs are resolved).
        ``path`` is the job's place in a workflow (``jobs.<id>``), "" for a job of its own."""
        if path:
            field = f"{path}.steps.with.{{key}}"
        else:
            field = "checkout.{key}"
        checkout = self._admit_one(spec.checkout, spec.repo, cap, who, field)
        steps = list(spec.steps)
        for i, step in enumerate(steps):
            if step.checkout is not None:
                where = f"{path}.steps[{i}].with.{{key}}" if path else f"steps.{i}.checkout.{{key}}"
                admitted = self._admit_one(step.checkout, spec.repo, cap, who, where)
                steps[i] = step.model_copy(update={"checkout": admitted})
        return spec.model_copy(update={"checkout": checkout, "steps": tuple(steps)})

    def _admit_one(
        self, options: CheckoutSpec, repo: str, cap: Capability, who: Submitter, field: str
    ) -> CheckoutSpec:
        try:
            url = options.repo_url(repo)
            if url != repo:
                check_repo_url(url, allow_local=self.settings.allow_local_repos)
                check_remote(url, self.settings)
        except ValueError as exc:
            raise InputError(f"repository: {exc}", field=field.format(key="repository")) from None
        except InputError as exc:  # RemoteRefused: before any connection
            raise InputError(str(exc), field=field.format(key="repository")) from None
        ref = options.ref
        if ref is None and url == repo:
            return options
        strict = cap.refs is not None
        if ref is not None and "${{" in ref:
            if strict:
                raise InputError(
                    f"checkout ref {ref!r} is an expression; capability {cap.name!r} checks "
                    "refs against its allowed refs when the job is submitted: write the ref "
                    "by name",
                    field=field.format(key="ref"),
                )
            _check(cap, url, None, who, ref, field)
            return options
        name = ref or "HEAD"
        try:
            sha, refs = self.locate(url, name, strict)
        except InputError as exc:
            raise InputError(str(exc), field=field.format(key="ref")) from None
        _check(cap, url, refs, who, name, field)
        return options if sha is None else options.model_copy(update={"ref": sha})


def _check(
    cap: Capability,
    url: str,
    refs: list[str] | None,
    who: Submitter,
    ref: str,
    field: str,
) -> None:
    """The capability's repository and ref rules for one checkout; PolicyDenied naming it."""
    try:
        check_policy(cap, url, refs, who)
    except PolicyDenied as denied:
        key = "repository" if denied.rule.endswith(".repos") else "ref"
        raise PolicyDenied(
            f"checkout ref {ref!r}: {denied.detail}"
            if key == "ref"
            else f"checkout repository {url!r}: {denied.detail}",
            rule=denied.rule,
            field=field.format(key=key),
        ) from None
