"""Workflow files (a GitHub/Gitea Actions subset) parsed and validated into a Pipeline.

Pure: text in, plain data out. Every problem of a file is collected, each a WorkflowError
at the line and column of the offending key or value, naming the key and saying what
ci-pool supports instead.

The file level is read here; ``jobs`` builds each job, ``steps`` its steps and checkout,
and ``schema`` holds the keys each level may have.

What is resolved when parsing, and what is left for the runtime:

- ``matrix.*`` is substituted everywhere (each matrix cell is its own PipelineJob), and what
  no longer depends on the run is evaluated (``${{ matrix.os == 'linux' }}`` -> ``true``).
- ``runs-on``, ``container``, ``shell``, ``timeout-minutes``, ``continue-on-error`` and the
  checkout's ``with:`` must be known when parsing: they may use ``matrix`` only.
- ``github.*``, ``env.*``, ``needs.*`` and ``steps.*`` are left in place, as ``${{ }}`` in
  templates (``run``, env values, names, outputs, working-directory) and as expression text
  in ``if_expr``; the runtime renders them with ``ci_pool.core.workflow.expressions``. As
  in GitHub, an ``if_expr`` that calls no status function means ``success() && (...)``:
  the runtime adds that, and None means ``success()``.
- One extension: a job's ``if:`` may use ``matrix`` (GitHub evaluates it before expanding).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from ci_pool.core.admission import Admission
from ci_pool.core.capabilities import Capability
from ci_pool.core.pipeline import (
    Pipeline,
    PipelineJob,
    WorkflowErrors,
    check_sizes,
    find_cycles,
    topological_order,
)
from ci_pool.core.triggers import schedule_crons
from ci_pool.core.workflow.concurrency import ConcurrencyReader
from ci_pool.core.workflow.contexts import WORKFLOW_LEVEL, ValueReader
from ci_pool.core.workflow.jobs import JobBuilder, Workflow, read_permissions
from ci_pool.core.workflow.matrix import cell_keys, read_strategies
from ci_pool.core.workflow.schema import ID, SHELLS, WORKFLOW_KEYS, check_keys, one_or_many
from ci_pool.core.workflow.steps import RunDefaults
from ci_pool.core.workflow.yaml_source import MarkedMap, Pos, Source, plain
from ci_pool.exceptions import WorkflowError

#: ``run-name`` is rendered when the pipeline is submitted: github (and inputs) only.
RUN_NAME_LEVEL = WORKFLOW_LEVEL | {"inputs"}

__all__ = [
    "Pipeline",
    "PipelineJob",
    "WorkflowErrors",
    "parse_workflow",
    "topological_order",
    "validate_workflow",
]


def parse_workflow(
    text: str,
    file: str,
    pool: Admission | Mapping[str, Capability],
    max_jobs: int | None = None,
) -> Pipeline:
    """The pipeline of a workflow file; raises WorkflowErrors listing every problem.

    Each job is admitted by ``pool``'s rules (``Settings.admission``: routing, time limit,
    image), so a file that parses is one the pool accepts, policy aside. A bare capability
    table takes the built-in limits. ``max_jobs`` overrides ``pool.max_jobs``, the jobs a
    file may have, matrix cells counted (``max_jobs_per_pipeline``).
    """
    pipeline, errors = _parse(text, file, _rules(pool, max_jobs))
    if errors or pipeline is None:
        raise WorkflowErrors(errors)
    return pipeline


def validate_workflow(
    text: str,
    file: str,
    pool: Admission | Mapping[str, Capability],
    max_jobs: int | None = None,
) -> list[WorkflowError]:
    """Every problem of a workflow file, in file order; empty when it is valid."""
    return _parse(text, file, _rules(pool, max_jobs))[1]


def _rules(pool: Admission | Mapping[str, Capability], max_jobs: int | None) -> Admission:
    rules = Admission.of(pool)
    return rules if max_jobs is None else replace(rules, max_jobs=max_jobs)


def _needs(src: Source, job_id: str, job: MarkedMap, job_ids: list[str]) -> list[str]:
    """The job ids a job needs; unknown ones are errors at the item that names them."""
    if "needs" not in job:
        return []
    where = f"jobs.{job_id}.needs"
    out: list[str] = []
    for need, pos in one_or_many(job["needs"], job.value_pos["needs"]):
        if not isinstance(need, str):
            src.error(f"{where}: must be a job id or a list of job ids", pos)
        elif need == job_id:
            src.error(f"{where}: job {job_id!r} cannot need itself", pos)
        elif need not in job_ids:
            src.error(
                f"{where}: job {need!r} does not exist; jobs in this file: {', '.join(job_ids)}",
                pos,
            )
        elif need not in out:
            out.append(need)
    return out


def _defaults(src: Source, data: MarkedMap) -> RunDefaults:
    """``defaults.run``: the shell and working directory of every run: step."""
    value = data.get("defaults")
    if value is None:
        return RunDefaults("bash", None)
    if not isinstance(value, MarkedMap):
        src.error("defaults: must be a mapping with run:", data.value_pos["defaults"])
        return RunDefaults("bash", None)
    check_keys(src, value, "defaults", "defaults", ("run",))
    run = value.get("run")
    if run is None:
        return RunDefaults("bash", None)
    if not isinstance(run, MarkedMap):
        src.error(
            "defaults.run: must be a mapping with shell: and working-directory:",
            value.value_pos["run"],
        )
        return RunDefaults("bash", None)
    check_keys(src, run, "defaults.run", "defaults.run", ("shell", "working-directory"))
    shell = run.get("shell", "bash")
    if shell not in SHELLS:
        src.error(
            f"defaults.run.shell: {shell!r} is not supported; ci-pool runs bash or sh",
            run.value_pos["shell"],
        )
    workdir = run.get("working-directory")
    if workdir is not None and (not isinstance(workdir, str) or "${{" in workdir):
        src.error(
            "defaults.run.working-directory: must be a plain path",
            run.value_pos["working-directory"],
        )
    return RunDefaults(str(shell), workdir if isinstance(workdir, str) else None)


def _jobs(src: Source, data: MarkedMap) -> MarkedMap:
    jobs = data.get("jobs")
    if not isinstance(jobs, MarkedMap) or not jobs:
        pos = data.value_pos.get("jobs") or data.key_pos.get("jobs") or Pos(1, 1)
        src.error("jobs: a workflow needs a mapping of job ids to jobs", pos)
        return MarkedMap()
    for job_id, job in jobs.items():
        if not ID.match(job_id):
            src.error(
                f"jobs.{job_id}: job ids start with a letter or _ and contain only letters, "
                "digits, - and _",
                jobs.key_pos[job_id],
            )
        if not isinstance(job, MarkedMap):
            src.error(
                f"jobs.{job_id}: must be a mapping with runs-on: and steps:", jobs.value_pos[job_id]
            )
    return jobs


def _run_name(src: Source, top: ValueReader, data: MarkedMap) -> str | None:
    """``run-name``: a template rendered at submit into the pipeline's display name."""
    if "run-name" not in data:
        return None
    pos = data.value_pos["run-name"]
    raw = data["run-name"]
    if isinstance(raw, str) and raw.strip():
        return top.text(raw, pos, "run-name", RUN_NAME_LEVEL)[:200]
    src.error("run-name: must be a non-empty string", pos)
    return None


def _parse(text: str, file: str, rules: Admission) -> tuple[Pipeline | None, list[WorkflowError]]:
    src = Source(file, text)
    data = src.load()
    if data is None and not src.errors:
        src.error("the workflow is empty; it needs jobs:", Pos(1, 1))
    if not isinstance(data, MarkedMap):
        if data is not None:
            src.error("a workflow must be a mapping with jobs:", Pos(1, 1))
        return None, src.errors
    check_keys(src, data, "", "workflow", WORKFLOW_KEYS)
    name = data.get("name", file)
    if not isinstance(name, str):
        src.error("name: must be a string", data.value_pos["name"])
    on = plain(data.get("on"))
    if not (
        on is None
        or isinstance(on, str | dict)
        or (isinstance(on, list) and all(isinstance(e, str) for e in on))
    ):
        src.error("on: must be an event name, a list of them or a mapping", data.value_pos["on"])
    else:
        try:
            schedule_crons(on)
        except ValueError as exc:
            src.error(f"{exc} (cron: minute hour day-of-month month day-of-week, in UTC)",
                      data.value_pos["on"])  # fmt: skip
    run_defaults = _defaults(src, data)
    top = ValueReader(src, {})
    env = top.env(data, "env", "env", WORKFLOW_LEVEL)
    concurrency = ConcurrencyReader(src, "concurrency").read(data)
    jobs = _jobs(src, data)
    ids = list(jobs)
    valid = {j: job for j, job in jobs.items() if isinstance(job, MarkedMap)}
    needs = {j: _needs(src, j, job, ids) for j, job in valid.items()}
    for cycle in find_cycles(needs):
        first = cycle[0]
        src.error(
            f"jobs.{first}.needs: jobs {' -> '.join([*cycle, first])} need each other in a "
            "cycle; remove one of these needs",
            valid[first].key_pos["needs"],
        )
    outputs = {
        j: frozenset(job["outputs"]) if isinstance(job.get("outputs"), MarkedMap) else frozenset()
        for j, job in valid.items()
    }
    permissions = read_permissions(src, data, "permissions")
    run_name = _run_name(src, top, data)
    wf = Workflow(rules, env, run_defaults, outputs, permissions)
    strategies = read_strategies(src, jobs, valid, rules.max_jobs)
    if strategies is None:
        return None, src.errors
    keys = {j: cell_keys(j, s.cells, s.keys is not None) for j, s in strategies.items()}
    built: list[PipelineJob | None] = []
    for job_id, job in valid.items():
        # A needed job that is not a mapping is reported already; it has no cells.
        need_keys = tuple(k for n in needs[job_id] for k in keys.get(n, ()))
        strategy = strategies[job_id]
        for key, cell in zip(keys[job_id], strategy.cells, strict=True):
            pos = jobs.key_pos[job_id]
            builder = JobBuilder(src, wf, job_id, job, pos, needs[job_id], strategy, cell)
            built.append(builder.build(key, need_keys))
    check_sizes(src, jobs, [j for j in built if j is not None])
    errors = src.errors
    if errors:
        return None, errors
    jobs_built = tuple(j for j in built if j is not None)
    pipeline = Pipeline(str(name), file, on, jobs_built, concurrency)
    return replace(pipeline, run_name=run_name, permissions=permissions), []
