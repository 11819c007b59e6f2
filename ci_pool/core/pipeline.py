"""A parsed workflow: jobs (one per matrix cell), their steps and their ``needs`` graph.

Plain frozen data, produced by ``ci_pool.core.workflow.parser.parse_workflow``: each job
is a ``JobSpec`` plus its place in the graph. Strings that still hold ``${{ }}`` (``run``,
env values, names, outputs) are templates for the runtime
(``ci_pool.core.workflow.expressions.render``); ``if_expr`` values are expressions for
``ci_pool.core.workflow.expressions.condition``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ci_pool.core.concurrency import Concurrency
from ci_pool.core.specs import JobSpec
from ci_pool.core.workflow.yaml_source import MarkedMap, Source
from ci_pool.defaults import MAX_JOB_SPEC_BYTES, MAX_PIPELINE_BYTES
from ci_pool.exceptions import InputError, WorkflowError


class WorkflowErrors(InputError):
    """Every problem found in one workflow file; its text has one error per line."""

    def __init__(self, errors: Sequence[WorkflowError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class PipelineJob:
    """One job to run: a workflow job, or one cell of its matrix.

    ``spec`` is what runs: name (``name:`` with matrix values substituted, else the key),
    capability and labels, env (workflow env, container env, then job env), timeout, image
    (``container:``), checkout and steps. Its ``repo`` and ``ref`` are empty until the
    pipeline is submitted. The other fields place the job in the pipeline's graph."""

    #: Unique in the pipeline: the job id, plus "(values, ...)" for a matrix cell.
    key: str
    #: The job's key under ``jobs:``; every cell of a matrix shares it.
    job_id: str
    spec: JobSpec
    matrix: dict[str, Any]
    #: Keys of the jobs this one waits for (every cell of each needed job id).
    needs: tuple[str, ...]
    #: The needed job ids as written (what the ``needs`` context is keyed by).
    need_ids: tuple[str, ...]
    #: Expression to evaluate once the needs are done; None means ``success()``, and one
    #: that calls no status function means ``success() && (...)``, as in GitHub.
    if_expr: str | None
    continue_on_error: bool
    #: Output name -> template, rendered when the job ends.
    outputs: dict[str, str]
    #: ``container: options`` as written (extra ``docker create`` options); policy must vet
    #: them before use.
    container_options: str | None = None
    fail_fast: bool = True
    max_parallel: int | None = None
    #: The cells of one matrix share fail-fast and max-parallel; the job id (the default).
    matrix_group: str = ""
    #: Job-level ``concurrency:`` (the cell's matrix substituted), evaluated at submit.
    concurrency: Concurrency | None = None
    #: A matrix computed at run time (``dynamic_matrix``), as written: this job is then the
    #: template its cells are made from once its needs have ended.
    dynamic_matrix: Any = None

    def __post_init__(self) -> None:
        if not self.matrix_group:
            object.__setattr__(self, "matrix_group", self.job_id)


@dataclass(frozen=True)
class Pipeline:
    """A workflow file as jobs to run."""

    name: str
    file: str
    #: The ``on:`` section as written; recorded, not enforced.
    on: Any
    jobs: tuple[PipelineJob, ...]
    #: Workflow-level ``concurrency:``, evaluated at submit.
    concurrency: Concurrency | None = None
    #: ``run-name``: a template over github.* (and inputs.*), rendered at submit into the
    #: pipeline's display name.
    run_name: str | None = None
    #: The workflow's ``permissions:`` (recorded; each job carries its own or these).
    permissions: dict[str, str] | None = None

    def job(self, key: str) -> PipelineJob:
        """The job with this key."""
        for job in self.jobs:
            if job.key == key:
                return job
        raise KeyError(key)

    def cells(self, job_id: str) -> tuple[PipelineJob, ...]:
        """Every job made from one workflow job (one per matrix cell)."""
        return tuple(j for j in self.jobs if j.job_id == job_id)


def job_bytes(job: PipelineJob) -> int:
    """Roughly what a job weighs in the store: its scripts, env values, names and outputs."""
    spec = job.spec
    texts = [spec.name, *spec.env.values(), *job.outputs.values()]
    for step in spec.steps:
        texts += [step.name, step.run, *step.env.values(), step.if_expr or ""]
    return sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)


def check_sizes(src: Source, jobs: MarkedMap, built: list[PipelineJob]) -> None:
    """Each job within ``MAX_JOB_SPEC_BYTES``, all of them within ``MAX_PIPELINE_BYTES``
    (aliases and matrix cells repeat text the file holds once)."""
    total = 0
    for job in built:
        size = job_bytes(job)
        total += size
        where = jobs.key_pos[job.job_id]
        if size > MAX_JOB_SPEC_BYTES:
            src.error(
                f"jobs.{job.job_id}: {job.key} is {size} bytes of scripts and values; the "
                f"limit is {MAX_JOB_SPEC_BYTES} per job",
                where,
            )
            return
        if total > MAX_PIPELINE_BYTES:
            src.error(
                f"jobs.{job.job_id}: the jobs up to {job.key} come to more than "
                f"{MAX_PIPELINE_BYTES} bytes of scripts and values, the limit per workflow",
                where,
            )
            return


def find_cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Each cycle of a dependency graph once, as the nodes along it (in graph order)."""
    state: dict[str, int] = {}  # 1 while on the current path, 2 when done
    path: list[str] = []
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append(cycle)
            elif dep in graph and dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return cycles


def topological_order(pipeline: Pipeline) -> tuple[PipelineJob, ...]:
    """The jobs so that each comes after everything it needs: in waves, each in file order."""
    keys = {job.key for job in pipeline.jobs}
    problems = [
        WorkflowError(
            f"job {job.key!r} needs {need!r}, which is not in the pipeline", file=pipeline.file
        )
        for job in pipeline.jobs
        for need in job.needs
        if need not in keys
    ]
    if problems:
        raise WorkflowErrors(problems)
    done: set[str] = set()
    order: list[PipelineJob] = []
    pending = list(pipeline.jobs)
    while pending:
        ready = [job for job in pending if done.issuperset(job.needs)]
        if not ready:
            names = ", ".join(job.key for job in pending)
            raise WorkflowErrors(
                [WorkflowError(f"jobs {names} need each other in a cycle", file=pipeline.file)]
            )
        order.extend(ready)
        done.update(job.key for job in ready)
        pending = [job for job in pending if job.key not in done]
    return tuple(order)
