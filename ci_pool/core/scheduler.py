"""Pipelines: which blocked jobs to queue, skip or cancel once their needs end (a pure
decision over a snapshot), and the loop that applies those decisions to the store."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ci_pool.core.concurrency import Verdict, job_member, pipeline_member
from ci_pool.core.specs import FINAL_STATES, JobState, PipelineState
from ci_pool.core.workflow import dynamic_matrix, expressions
from ci_pool.core.workflow.contexts import GITHUB_ALIASES
from ci_pool.core.workflow.run_context import RunFacts, github_context
from ci_pool.defaults import MAX_JOBS_PER_PIPELINE

log = logging.getLogger(__name__)


#: What ``needs.<id>.result`` says for each final job state.
_RESULTS = {
    JobState.SUCCEEDED: "success",
    JobState.FAILED: "failure",
    JobState.TIMED_OUT: "failure",
    JobState.ERROR: "failure",
    JobState.REJECTED: "failure",
    JobState.CANCELLED: "cancelled",
    JobState.SKIPPED: "skipped",
}


@dataclass(frozen=True, slots=True)
class JobView:
    """The part of a pipeline job the scheduler decides on."""

    id: str
    key: str
    job_ref: str
    state: JobState
    needs: tuple[str, ...] = ()
    if_expr: str | None = None
    continue_on_error: bool = False
    matrix: Mapping[str, Any] = field(default_factory=dict)
    fail_fast: bool = True
    max_parallel: int | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, Any] = field(default_factory=dict)
    #: A matrix computed at run time, as written, while this job is its cells' template.
    matrix_template: Any = None

    @property
    def result(self) -> str | None:
        """success | failure | cancelled | skipped once final (continue-on-error passes)."""
        if self.state not in FINAL_STATES:
            return None
        result = _RESULTS[self.state]
        return "success" if result == "failure" and self.continue_on_error else result


@dataclass
class Decisions:
    queue: list[str] = field(default_factory=list)
    skip: list[tuple[str, str]] = field(default_factory=list)
    cancel: list[tuple[str, str]] = field(default_factory=list)
    #: Dynamic matrix templates to expand: (job id, the cells of its matrix).
    expand: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    #: Jobs that cannot run at all: (job id, why), e.g. a matrix output that is no matrix.
    fail: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.queue or self.skip or self.cancel or self.expand or self.fail)


def group_result(cells: Sequence[JobView]) -> str:
    """``needs.<id>.result`` of a (possibly matrix) job: failure wins, then cancelled, then
    skipped; success only when every cell succeeded."""
    results = {c.result for c in cells}
    for worst in ("failure", "cancelled", "skipped"):
        if worst in results:
            return worst
    return "success"


def needs_context(jobs: Iterable[JobView], refs: Iterable[str]) -> dict[str, Any]:
    """The ``needs`` context: result and merged outputs of each needed workflow job."""
    by_ref: dict[str, list[JobView]] = {}
    for j in jobs:
        by_ref.setdefault(j.job_ref, []).append(j)
    ctx: dict[str, Any] = {}
    for ref in refs:
        cells = by_ref.get(ref, [])
        outputs: dict[str, Any] = {}
        for c in cells:
            outputs.update(c.outputs)
        ctx[ref] = {"result": group_result(cells), "outputs": outputs}
    return ctx


def _fail_fast(jobs: Sequence[JobView]) -> list[tuple[str, str]]:
    cancel = []
    groups: dict[str, list[JobView]] = {}
    for j in jobs:
        groups.setdefault(j.job_ref, []).append(j)
    for cells in groups.values():
        if len(cells) < 2 or not cells[0].fail_fast:
            continue
        failed = [c for c in cells if c.result == "failure"]
        if failed:
            for c in cells:
                if c.state not in FINAL_STATES:
                    cancel.append((c.id, f"fail-fast: {failed[0].key} failed"))
    return cancel


def ancestors(job: JobView, by_key: Mapping[str, JobView]) -> list[JobView]:
    """Every job ``job`` needs, directly or through other jobs' needs (each once)."""
    seen: dict[str, JobView] = {}
    todo = [k for k in job.needs if k in by_key]
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen[key] = by_key[key]
        todo += [k for k in by_key[key].needs if k in by_key and k not in seen]
    return list(seen.values())


def _should_run(
    job: JobView, needed: list[JobView], upstream: list[JobView], ctx: dict[str, Any]
) -> tuple[bool, str]:
    """Whether a job whose needs ended runs. The status functions of its ``if:`` see every
    ancestor, as GitHub's do: ``failure()`` holds when any job up the chain failed, also
    behind a skipped or an ``always()`` job, and ``success()`` does not. A skipped job
    counts only as a direct need: a job whose needs succeeded runs whatever was skipped
    further up."""
    results = [n.result for n in upstream]
    status = (
        "failure"
        if "failure" in results
        else ("cancelled" if "cancelled" in results else "success")
    )
    skipped = any(n.result == "skipped" for n in needed)
    if job.if_expr:
        expr = expressions.parse(job.if_expr)
        explicit = expressions.uses_status_function(expr)
        ok = expressions.condition(expr, ctx, status)
        if not explicit:  # an `if:` without a status function means `success() && ...`
            ok = ok and status == "success" and not skipped
        return ok, f"if: {job.if_expr} was false"
    if status == "success" and not skipped:
        return True, ""
    bad = [n.key for n in needed if n.result != "success"]
    if bad:
        return False, f"needs {', '.join(bad)} did not succeed"
    far = sorted(n.key for n in upstream if n.result in ("failure", "cancelled"))
    return False, f"{', '.join(far)} further up the needs did not succeed"


def _expansion(job: JobView, ctx: Mapping[str, Any], out: Decisions, room: int | None) -> None:
    """A dynamic matrix whose needs have ended: its cells, no cells (skipped), or why its
    value is not a matrix (failed). ``room``: how many jobs the pipeline may still add."""
    try:
        cells = dynamic_matrix.resolve(job.matrix_template, ctx)
    except dynamic_matrix.MatrixProblem as exc:
        out.fail.append((job.id, f"the matrix is not valid: {exc}"))
        return
    if room is not None and len(cells) - 1 > room:
        out.fail.append(
            (
                job.id,
                f"the matrix is not valid: its {len(cells)} cells would take the pipeline "
                "past max_jobs_per_pipeline",
            )
        )
    elif not cells:
        out.skip.append((job.id, "the matrix computed at run time has no combinations"))
    else:
        out.expand.append((job.id, cells))


def decide(
    jobs: Sequence[JobView], base_ctx: Mapping[str, Any], max_jobs: int | None = None
) -> Decisions:
    """What to do now with the blocked jobs of one pipeline (pure); ``max_jobs`` bounds
    the jobs it may have once a dynamic matrix is expanded."""
    out = Decisions(cancel=_fail_fast(jobs))
    cancelled = {jid for jid, _ in out.cancel}
    by_key = {j.key: j for j in jobs}
    active: dict[str, int] = {}
    for j in jobs:
        if j.state in (JobState.QUEUED, JobState.RUNNING):
            active[j.job_ref] = active.get(j.job_ref, 0) + 1
    for job in jobs:
        if job.state is not JobState.BLOCKED or job.id in cancelled:
            continue
        needed = [by_key[k] for k in job.needs if k in by_key]
        if any(n.state not in FINAL_STATES for n in needed):
            continue
        ctx = {
            **base_ctx,
            "env": {**base_ctx.get("env", {}), **job.env},
            "matrix": dict(job.matrix),
            "needs": needs_context(jobs, dict.fromkeys(n.job_ref for n in needed)),
        }
        try:
            run, why = _should_run(job, needed, ancestors(job, by_key), ctx)
        except (expressions.ExpressionError, ValueError, TypeError) as exc:
            out.skip.append((job.id, f"if: {job.if_expr} could not be evaluated: {exc}"))
            continue
        if not run:
            out.skip.append((job.id, why))
            continue
        if job.matrix_template is not None:
            room = None if max_jobs is None else max_jobs - len(jobs)
            _expansion(job, ctx, out, room)
            continue
        if job.max_parallel is not None and active.get(job.job_ref, 0) >= job.max_parallel:
            continue  # max-parallel: waits for a sibling to finish
        active[job.job_ref] = active.get(job.job_ref, 0) + 1
        out.queue.append(job.id)
    return out


def pipeline_result(jobs: Sequence[JobView]) -> PipelineState | None:
    """The pipeline's final state once every job is final, else None."""
    if any(j.state not in FINAL_STATES for j in jobs):
        return None
    results = {j.result for j in jobs}
    if "failure" in results:
        return PipelineState.FAILED
    if "cancelled" in results:
        return PipelineState.CANCELLED
    return PipelineState.SUCCEEDED


Publish = Callable[[str, str], None]  # (capability, job_id)


def view(job: Any) -> JobView:
    """A store Job row as the scheduler sees it."""
    return JobView(
        id=job.id,
        key=job.key or job.id,
        job_ref=job.job_ref or job.id,
        state=JobState(job.state),
        needs=tuple(job.needs or ()),
        if_expr=job.if_expr,
        continue_on_error=bool(job.continue_on_error),
        matrix=job.matrix or {},
        fail_fast=bool(job.fail_fast),
        max_parallel=job.max_parallel,
        outputs=job.outputs or {},
        env=job.env or {},
        matrix_template=job.matrix_template,
    )


class PipelineScheduler:
    """Applies ``decide`` to the store until nothing changes; safe to run from several
    workers at once, since every change is a fenced transition.

    Concurrency groups gate it: a pipeline with a workflow-level group queues nothing until
    it holds its group, a job with a job-level group is queued only once it holds its own.
    When a member of a group ends, the pipeline of the member waiting for that group is
    advanced next, so it starts from the same pass."""

    def __init__(self, store: Any, publish: Publish, max_jobs: int = MAX_JOBS_PER_PIPELINE) -> None:
        self.store = store
        self.publish = publish
        #: ``max_jobs_per_pipeline``: a dynamic matrix may not take a pipeline past it.
        self.max_jobs = max_jobs

    def advance(self, pipeline_id: str) -> PipelineState | None:
        """Queue, skip or cancel what is due; close the pipeline when every job is final;
        then advance the pipelines waiting for a concurrency group this one released."""
        todo, seen = [pipeline_id], set()
        result = None
        while todo:
            current = todo.pop(0)
            if current in seen:
                continue
            seen.add(current)
            done, follow = self._advance_one(current)
            if current == pipeline_id:
                result = done
            todo.extend(follow)
        return result

    def _advance_one(self, pipeline_id: str) -> tuple[PipelineState | None, list[str]]:
        pipeline = self.store.get_pipeline(pipeline_id)
        follow: list[str] = []
        rows = self.store.pipeline_jobs(pipeline_id)
        live = any(JobState(r.state) not in FINAL_STATES for r in rows)
        holds = True
        if pipeline.concurrency is not None and live:
            got = self.store.claim_group(
                pipeline_member(pipeline_id), pipeline.repo, pipeline.concurrency
            )
            follow.extend(got.touched)
            holds = got.verdict is Verdict.RUN
        if holds and live:
            self._schedule(pipeline, follow)
        rows = self.store.pipeline_jobs(pipeline_id)
        result = pipeline_result([view(r) for r in rows])
        if result is not None:
            self.store.finish_pipeline(pipeline_id, result.value)
        ended = [job_member(r.id) for r in rows if r.concurrency and r.state in FINAL_STATES]
        if pipeline.concurrency is not None and result is not None:
            ended.append(pipeline_member(pipeline_id))
        follow.extend(self.store.released_waiters(ended))
        return result, [p for p in follow if p != pipeline_id]

    def _schedule(self, pipeline: Any, follow: list[str]) -> None:
        """The rounds of ``decide`` over one pipeline whose group (if any) it holds."""
        facts = pipeline.context or RunFacts()
        github = github_context(
            repo=pipeline.repo,
            ref=pipeline.ref,
            sha=pipeline.commit_sha or "",
            event_name=pipeline.event,
            facts=facts,
            run_id=pipeline.id,
            workflow=pipeline.name or "",
        )
        base_ctx = {
            **{name: github for name in ("github", *GITHUB_ALIASES)},
            "vars": dict(facts.vars),
            "inputs": dict(facts.inputs),
            "env": dict(pipeline.env or {}),
        }
        for _ in range(1000):  # each round finalises at least one job; bounded anyway
            rows = self.store.pipeline_jobs(pipeline.id)
            jobs = [view(r) for r in rows]
            todo = decide(jobs, base_ctx, self.max_jobs)
            if not todo:
                break
            by_id = {r.id: r for r in rows}
            for job_id, reason in todo.cancel:
                self.store.request_cancel(job_id, by=reason)
            for job_id, reason in todo.skip:
                self.store.transition(
                    job_id, JobState.SKIPPED, from_state=JobState.BLOCKED, reason=reason
                )
            again = self._expand(todo, by_id)
            for job_id in todo.queue:
                row = by_id[job_id]
                if row.concurrency is not None:
                    got = self.store.claim_group(job_member(job_id), row.repo, row.concurrency)
                    follow.extend(got.touched)
                    again = again or pipeline.id in got.touched
                    if got.verdict is not Verdict.RUN:
                        continue  # waits for its group; the group's release advances us
                done = self.store.transition(
                    job_id,
                    JobState.QUEUED,
                    from_state=JobState.BLOCKED,
                    values={"queued_at": datetime.now(UTC)},
                )
                if done is not None:
                    self.publish(row.capability, job_id)
            if not todo.skip and not todo.cancel and not again:
                break  # queued jobs change nothing more until they end

    def _expand(self, todo: Decisions, by_id: Mapping[str, Any]) -> bool:
        """Expand or fail the dynamic matrices ``decide`` found due; whether any changed."""
        for job_id, reason in todo.fail:
            self.store.transition(
                job_id,
                JobState.FAILED,
                from_state=JobState.BLOCKED,
                reason=reason,
                values={"finished_at": datetime.now(UTC)},
            )
        for job_id, cells in todo.expand:
            row = by_id[job_id]
            template = dynamic_matrix.MatrixTemplate(
                key=row.key or row.id,
                name=row.name,
                env=row.env or {},
                steps=tuple(row.steps),
                if_expr=row.if_expr,
                outputs=row.outputs_spec or {},
                checkout=row.checkout,
                environment=row.environment,
                fail_fast=bool(row.fail_fast),
                max_parallel=row.max_parallel,
            )
            self.store.expand_matrix(job_id, dynamic_matrix.cells_of(template, cells))
        return bool(todo.fail or todo.expand)
