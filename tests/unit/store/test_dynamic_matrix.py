"""A matrix computed at run time, through submit, the scheduler and the store, on SQLite
and PostgreSQL: the template is expanded once into queued cells even when schedulers race,
dependents wait for every cell, and an output that is no matrix fails the job with the
reason. The broker is left out (publish records what would be sent); the run on real
workers is tests/integration/test_dynamic_matrix.py."""

from __future__ import annotations

import threading

from ci_pool.core.specs import JobState
from ci_pool.service.pool import Pool
from ci_pool.store import Job
from tests.unit.store.conftest import RecordingPool

REPO = "git://127.0.0.1/org/app.git"
SHA = "a" * 40
WORKFLOW = """\
name: dyn
on: push
jobs:
  plan:
    runs-on: linux
    outputs:
      matrix: ${{ steps.m.outputs.matrix }}
    steps:
      - id: m
        run: echo "matrix=[]" >> "$GITHUB_OUTPUT"
  build:
    needs: plan
    runs-on: linux
    strategy:
      matrix:
        target: ${{ fromJSON(needs.plan.outputs.matrix) }}
    steps:
      - run: echo "building ${{ matrix.target }}"
  final:
    needs: build
    if: always()
    runs-on: linux
    steps:
      - run: echo "${{ needs.build.result }}"
"""


def by_key(pool: Pool, pipeline_id: str) -> dict[str, Job]:
    return {j.key or j.id: j for j in pool.store.pipeline_jobs(pipeline_id)}


def run_plan(pool: Pool, matrix: str) -> str:
    """Submit, let ``plan`` succeed with ``matrix`` as its output; the pipeline's id."""
    row = pool.submit_pipeline(WORKFLOW, "dyn.yml", REPO, "main", commit=SHA)
    jobs = by_key(pool, row.id)
    assert set(jobs) == {"plan", "build", "final"}
    assert jobs["build"].state is JobState.BLOCKED
    plan = jobs["plan"]
    got = pool.store.claim(plan.id, "runner-a", 30)
    assert got is not None
    pool.store.set_outputs(plan.id, got.job.attempt, {"matrix": matrix})
    assert pool.store.finish(plan.id, got.job.attempt, JobState.SUCCEEDED, runner_id="runner-a")
    return row.id


def finish(pool: Pool, job: Job, state: JobState = JobState.SUCCEEDED) -> None:
    got = pool.store.claim(job.id, "runner-a", 30)
    assert got is not None
    assert pool.store.finish(job.id, got.job.attempt, state, runner_id="runner-a")


def test_racing_schedulers_expand_the_matrix_once(pool: RecordingPool) -> None:
    pipeline_id = run_plan(pool, '["a", "b", "c"]')
    start = threading.Barrier(4)

    def advance() -> None:
        start.wait()
        pool.scheduler().advance(pipeline_id)

    threads = [threading.Thread(target=advance) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    jobs = by_key(pool, pipeline_id)
    cells = ["build (a)", "build (b)", "build (c)"]
    assert sorted(jobs) == sorted(["plan", "final", *cells])
    for key in cells:
        assert jobs[key].state is JobState.QUEUED, key
        assert pool.published.count(jobs[key].id) == 1
        assert jobs[key].matrix_template is None
    assert jobs["build (b)"].steps[0].run == 'echo "building b"'
    assert jobs["build (b)"].matrix == {"target": "b"}
    assert sorted(jobs["final"].needs) == cells
    assert jobs["final"].state is JobState.BLOCKED

    for key in cells[:2]:
        finish(pool, jobs[key])
    pool.scheduler().advance(pipeline_id)
    assert pool.store.get_job(jobs["final"].id).state is JobState.BLOCKED  # one cell runs
    finish(pool, jobs[cells[2]])
    pool.scheduler().advance(pipeline_id)
    assert pool.store.get_job(jobs["final"].id).state is JobState.QUEUED


def test_an_output_that_is_not_a_matrix_fails_the_job_with_the_reason(
    pool: RecordingPool,
) -> None:
    pipeline_id = run_plan(pool, "{not json")
    pool.scheduler().advance(pipeline_id)
    jobs = by_key(pool, pipeline_id)
    build = jobs["build"]
    assert build.state is JobState.FAILED
    assert build.reason is not None
    assert "needs.plan.outputs.matrix" in build.reason and "is not JSON" in build.reason
    # if: always() still runs the job after it, which sees the failure
    assert jobs["final"].state is JobState.QUEUED


def test_an_empty_matrix_skips_the_job(pool: RecordingPool) -> None:
    pipeline_id = run_plan(pool, "[]")
    pool.scheduler().advance(pipeline_id)
    jobs = by_key(pool, pipeline_id)
    assert jobs["build"].state is JobState.SKIPPED
    assert jobs["build"].reason == "the matrix computed at run time has no combinations"
