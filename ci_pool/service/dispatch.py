"""``workflow_dispatch`` from the API: run a workflow file of a repository at a ref, by
hand, with inputs (what GitHub's "Run workflow" and its dispatches endpoint do).

The workflow is read from the repository at the ref's current commit (the forge's file,
never one sent in the request), must say ``on: workflow_dispatch``, and gets the inputs as
given: names it does not declare are refused, required ones without a default must be
given. Their values reach ``github.event.inputs`` and ``inputs.*`` through the trigger
kept with the pipeline.
"""

from __future__ import annotations

import re
from typing import Any

from ci_pool.core.names import check_ref, check_repo_url
from ci_pool.core.policy import Submitter
from ci_pool.core.triggers import dispatch_trigger
from ci_pool.core.workflow.parser import parse_workflow
from ci_pool.core.workflow.run_context import RunFacts
from ci_pool.exceptions import InputError, NotFound
from ci_pool.git import resolve
from ci_pool.service.pool import Pool
from ci_pool.service.webhooks import HEADERS, fetch_workflows
from ci_pool.store.models import Pipeline as PipelineRow

#: Inputs one dispatch may give, and the bytes of each value (GitHub allows 25 inputs).
MAX_INPUTS = 50
MAX_INPUT_BYTES = 64 * 1024
_INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$")


def check_inputs(inputs: dict[str, str]) -> dict[str, str]:
    """Names like GitHub's input ids, values within their bound; InputError otherwise."""
    if len(inputs) > MAX_INPUTS:
        raise InputError(f"{len(inputs)} inputs; at most {MAX_INPUTS}", field="inputs")
    for name, value in inputs.items():
        if not _INPUT_NAME.match(name):
            raise InputError(f"{name[:40]!r} is not an input name", field="inputs")
        if len(value.encode()) > MAX_INPUT_BYTES or "\x00" in value:
            raise InputError(
                f"the value is over {MAX_INPUT_BYTES} bytes or holds a NUL character",
                field=f"inputs.{name}",
            )
    return inputs


def _declared(on: Any) -> dict[str, Any]:
    spec = on.get("workflow_dispatch") if isinstance(on, dict) else None
    inputs = spec.get("inputs") if isinstance(spec, dict) else None
    return inputs if isinstance(inputs, dict) else {}


def _with_defaults(on: Any, given: dict[str, str], file: str) -> dict[str, str]:
    declared = _declared(on)
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InputError(
            f"{file} declares no input {', '.join(unknown)} (it declares: "
            f"{', '.join(map(str, declared)) or 'none'})",
            field="inputs",
        )
    values = dict(given)
    for name, spec in declared.items():
        spec = spec if isinstance(spec, dict) else {}
        if name in values:
            continue
        if "default" in spec:
            default = spec["default"]
            values[str(name)] = str(default).lower() if isinstance(default, bool) else str(default)
        elif spec.get("required"):
            raise InputError(f"{file} requires input {name!r}", field=f"inputs.{name}")
    return values


def dispatch(
    pool: Pool, repo: str, ref: str, workflow: str, inputs: dict[str, str], who: Submitter
) -> PipelineRow:
    """Run ``workflow`` (its path in the repository, or its file name) at ``ref``."""
    try:
        check_repo_url(repo, allow_local=pool.settings.allow_local_repos)
    except ValueError as exc:
        raise InputError(str(exc), field="repo") from None
    try:
        check_ref(ref)
    except ValueError as exc:
        raise InputError(f"{ref!r} {exc}", field="ref") from None
    check_inputs(inputs)
    sha, refs = resolve(repo, ref, pool.settings)
    found = fetch_workflows(pool.settings, "forgejo", repo, sha)
    dirs = HEADERS["forgejo"].workflow_dirs
    matches = [(p, t) for p, t in found.files if p == workflow or p.rsplit("/", 1)[-1] == workflow]
    if not matches:
        raise NotFound(f"no workflow {workflow!r} at {ref} of {repo} (looked in {', '.join(dirs)})")
    path, text = matches[0]
    on = parse_workflow(
        text, path, pool.settings.capabilities, pool.settings.max_jobs_per_pipeline
    ).on
    why = dispatch_trigger(on)
    if why is not None:
        raise InputError(
            f"{path}: {why}; add on: workflow_dispatch to run it by hand", field="workflow"
        )
    values = _with_defaults(on, inputs, path)
    full = refs[0] if refs else ref
    trigger = RunFacts(
        event_name="workflow_dispatch",
        ref=full if full.startswith("refs/") else f"refs/heads/{full}",
        ref_type="tag" if full.startswith("refs/tags/") else "branch",
        ref_name=ref.removeprefix("refs/heads/").removeprefix("refs/tags/"),
        sha=found.commit,
        actor=who.name[:200],
        event={"inputs": values, "ref": full, "workflow": path},
    )
    return pool.submit_pipeline(
        text, file=path, repo=repo, ref=ref, commit=found.commit, who=who, trigger=trigger
    )
