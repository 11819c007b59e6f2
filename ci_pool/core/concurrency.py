"""Concurrency groups (``concurrency:`` of a workflow or of a job), as in GitHub Actions.

A group holds at most one running member and one waiting member. A new member waits for
the running one (with ``cancel-in-progress``, it has the running one cancelled first) and
supersedes the member already waiting, which is cancelled. A member is a whole pipeline
(workflow level) or one job (job level); both share the names of one repository.

The group is an expression evaluated when the pipeline is submitted, from what is known
then (``github.*`` facts, ``inputs``, ``vars``, and ``matrix`` at job level).

Pure: the group as written (``Concurrency``), as evaluated (``ConcurrencyGroup``), and the
decision a member's claim gets (``claim``); the store applies it under a fenced update.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ci_pool import defaults as d
from ci_pool.core.workflow import expressions
from ci_pool.core.workflow.contexts import GITHUB_ALIASES
from ci_pool.core.workflow.run_context import RunFacts, github_context
from ci_pool.exceptions import InputError


@dataclass(frozen=True)
class Concurrency:
    """``concurrency:`` as written: both values are templates (``${{ }}`` kept)."""

    group: str
    #: ``"true"``, ``"false"`` or a template whose value is true or false.
    cancel_in_progress: str = "false"


class ConcurrencyGroup(BaseModel):
    """A concurrency group as evaluated at submit: stored on the pipeline or job row."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=d.MAX_CONCURRENCY_GROUP)
    cancel_in_progress: bool = False


# -- members -------------------------------------------------------------------------


def pipeline_member(pipeline_id: str) -> str:
    """A whole pipeline as the member of a group (workflow-level ``concurrency``)."""
    return f"pipeline:{pipeline_id}"


def job_member(job_id: str) -> str:
    """One job as the member of a group (job-level ``concurrency``)."""
    return f"job:{job_id}"


def split_member(member: str) -> tuple[str, str]:
    """``("pipeline" | "job", id)`` of a member."""
    kind, _, ident = member.partition(":")
    if kind not in ("pipeline", "job") or not ident:
        raise ValueError(f"{member!r} is not a concurrency group member")
    return kind, ident


def group_key(repo: str, name: str) -> str:
    """The store key of a group: its name within its repository (a URL with or without a
    trailing ``.git`` or ``/`` is the same repository)."""
    where = repo.rstrip("/").removesuffix(".git")
    return hashlib.sha256(f"{where}\n{name}".encode()).hexdigest()


# -- the decision --------------------------------------------------------------------


class Verdict(str, Enum):
    """What a member asking for its group gets."""

    RUN = "run"  # it holds the group: its jobs may be queued
    WAIT = "wait"  # another member holds it: this one waits, pending


@dataclass(frozen=True, slots=True)
class Slot:
    """A group as the store holds it: its holder and its waiting member, and whether each
    has yet to end."""

    holder: str | None = None
    holder_live: bool = False
    pending: str | None = None
    pending_live: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    """The decision for one member: the group's holder and waiting member afterwards, the
    waiting member it supersedes (to cancel) and the holder to cancel (cancel-in-progress)."""

    verdict: Verdict
    holder: str | None
    pending: str | None
    supersede: str | None = None
    cancel: str | None = None

    def changes(self, slot: Slot) -> bool:
        """Whether the slot must be written."""
        return (self.holder, self.pending) != (slot.holder, slot.pending)


def claim(slot: Slot, me: str, cancel_in_progress: bool) -> Claim:
    """The decision for ``me`` (a member that has yet to end) asking for its group."""
    if slot.holder == me:
        return Claim(Verdict.RUN, me, slot.pending)
    other = slot.pending if slot.pending_live and slot.pending != me else None
    if not slot.holder_live:
        # Free: take it. A member still waiting from before is superseded, as it would
        # have been had it started a moment earlier and this one arrived now.
        return Claim(Verdict.RUN, me, None, supersede=other)
    return Claim(
        Verdict.WAIT,
        slot.holder,
        me,
        supersede=other,
        cancel=slot.holder if cancel_in_progress else None,
    )


# -- evaluation at submit ------------------------------------------------------------


@dataclass(frozen=True)
class SubmitFacts:
    """What is known of a run when its pipeline is submitted."""

    repo: str
    ref: str
    sha: str
    event: str
    workflow: str
    run_id: str
    #: The run's inputs, vars, event payload and actor, when known.
    facts: RunFacts = field(default_factory=RunFacts)

    def context(self) -> dict[str, Any]:
        """The contexts a ``concurrency:`` expression may read."""
        github = github_context(
            repo=self.repo,
            ref=self.ref,
            sha=self.sha,
            event_name=self.event,
            facts=self.facts,
            run_id=self.run_id,
            workflow=self.workflow,
        )
        return {
            **{name: github for name in ("github", *GITHUB_ALIASES)},
            "inputs": dict(self.facts.inputs),
            "vars": dict(self.facts.vars),
        }


def _flag(template: str, ctx: Mapping[str, Any]) -> bool:
    parts = expressions.parse_template(template)
    if len(parts) == 1 and not isinstance(parts[0], str):
        value = expressions.evaluate(parts[0], ctx)
        if isinstance(value, bool):
            return value
        value = expressions.to_text(value)
    else:
        value = expressions.render(parts, ctx)
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError(f"cancel-in-progress must be true or false, not {value!r}")
    return text == "true"


def resolve(
    conc: Concurrency | None,
    facts: SubmitFacts,
    where: str,
    matrix: Mapping[str, Any] | None = None,
) -> ConcurrencyGroup | None:
    """The group as evaluated for this run; an InputError at ``where`` when it cannot be."""
    if conc is None:
        return None
    ctx = {**facts.context(), "matrix": dict(matrix or {})}
    try:
        name = expressions.render(conc.group, ctx).strip()
        cancel = _flag(conc.cancel_in_progress, ctx)
    except (expressions.ExpressionError, ValueError, TypeError) as exc:
        raise InputError(f"{where}: {exc}", field=where) from None
    if not name:
        raise InputError(
            f"{where}: the group {conc.group!r} is empty for this run; give it a name that "
            "is never empty, such as ${{ github.workflow }}-${{ github.ref }}",
            field=where,
        )
    if len(name) > d.MAX_CONCURRENCY_GROUP:
        raise InputError(
            f"{where}: the group name is {len(name)} characters; the limit is "
            f"{d.MAX_CONCURRENCY_GROUP}",
            field=where,
        )
    return ConcurrencyGroup(name=name, cancel_in_progress=cancel)


def check_no_deadlock(
    workflow: ConcurrencyGroup | None, job: ConcurrencyGroup | None, where: str
) -> None:
    """A job whose group is its own workflow's would wait for its own pipeline forever."""
    if workflow is not None and job is not None and workflow.name == job.name:
        raise InputError(
            f"{where}: the group {job.name!r} is also the workflow's concurrency group; the "
            "job would wait for its own pipeline forever. Give the job another group",
            field=where,
        )


def describe(member: str, *, pipeline_of: str | None = None) -> str:
    """A member in words: ``pipeline X`` or ``job Y`` (of pipeline X)."""
    kind, ident = split_member(member)
    if kind == "pipeline":
        return f"pipeline {ident}"
    return f"job {ident}" + (f" of pipeline {pipeline_of}" if pipeline_of else "")
