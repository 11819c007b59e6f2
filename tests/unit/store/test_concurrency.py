"""Concurrency groups through submit, the scheduler and the store, on SQLite and
PostgreSQL: one running and one waiting member per group, the newest waiting member wins,
cancel-in-progress, the release starting the waiting member, and racing claims.

The broker is left out (publish records what would be sent); the end-to-end run on real
workers is tests/integration/test_concurrency.py."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest

from ci_pool.core.concurrency import ConcurrencyGroup, Verdict, pipeline_member
from ci_pool.core.specs import JobState
from ci_pool.exceptions import InputError
from ci_pool.service.pool import Pool
from ci_pool.service.reaper import Reaper
from ci_pool.service.workflow_runs import pipeline_job
from ci_pool.settings import load_settings
from ci_pool.store import Job, Store
from tests.unit.store.conftest import RecordingPool

REPO = "git://127.0.0.1/org/app.git"
LOST_A = "runner_lost: no heartbeat from runner-a since the lease ended"
SHA = "a" * 40


def workflow(concurrency: str, job_concurrency: str = "") -> str:
    """A one-job workflow with these top-level and job-level ``concurrency:`` lines."""
    job = textwrap.indent(job_concurrency, "    ")
    return (
        f"name: deploy\n{concurrency}\njobs:\n  ship:\n    runs-on: linux\n{job}\n"
        "    steps:\n      - run: echo ship\n"
    )


def submit(pool: Pool, wf: str, repo: str = REPO) -> tuple[str, Job]:
    row = pool.submit_pipeline(wf, "deploy.yml", repo, "main", commit=SHA)
    (job,) = pool.store.pipeline_jobs(row.id)
    return row.id, job


def finish(pool: Pool, job_id: str, state: JobState = JobState.SUCCEEDED) -> None:
    got = pool.store.claim(job_id, "runner-a", 30)
    assert got is not None
    assert pool.store.finish(job_id, got.job.attempt, state, runner_id="runner-a") is not None
    job = pool.store.get_job(job_id)
    assert job.pipeline_id is not None
    pool.scheduler().advance(job.pipeline_id)


GROUP = "concurrency: ${{ github.workflow }}-${{ github.ref }}"


def test_a_second_run_waits_and_starts_when_the_first_ends(pool: RecordingPool) -> None:
    first, a = submit(pool, workflow(GROUP))
    second, b = submit(pool, workflow(GROUP))
    assert pool.store.get_pipeline(first).concurrency == ConcurrencyGroup(
        name="deploy-refs/heads/main"
    )
    assert pool.published == [a.id]
    assert pool.store.get_job(b.id).state is JobState.BLOCKED
    assert pool.why_waiting(pool.store.get_job(b.id)) == (
        f"waiting for concurrency group deploy-refs/heads/main (held by pipeline {first})"
    )
    pool.scheduler().advance(second)  # asking again changes nothing
    assert pool.published == [a.id]

    finish(pool, a.id)
    assert pool.published == [a.id, b.id]
    assert pool.store.get_job(b.id).state is JobState.QUEUED
    assert pool.store.get_pipeline(first).state == "succeeded"


def test_the_release_of_a_failed_holder_starts_the_waiting_run(pool: RecordingPool) -> None:
    _, a = submit(pool, workflow(GROUP))
    _, b = submit(pool, workflow(GROUP))
    finish(pool, a.id, JobState.FAILED)
    assert pool.store.get_job(b.id).state is JobState.QUEUED


def test_a_third_run_supersedes_the_waiting_one(pool: RecordingPool) -> None:
    _, a = submit(pool, workflow(GROUP))
    second, b = submit(pool, workflow(GROUP))
    third, c = submit(pool, workflow(GROUP))
    gone = pool.store.get_job(b.id)
    assert gone.state is JobState.CANCELLED
    assert gone.reason == (
        f"superseded by pipeline {third} in concurrency group deploy-refs/heads/main"
    )
    assert pool.store.get_pipeline(second).state == "cancelled"
    assert pool.store.get_job(c.id).state is JobState.BLOCKED
    finish(pool, a.id)
    assert pool.published == [a.id, c.id]


def test_cancel_in_progress_of_a_queued_holder_runs_the_new_one_at_once(
    pool: RecordingPool,
) -> None:
    wf = workflow("concurrency:\n  group: g\n  cancel-in-progress: true")
    first, a = submit(pool, wf)
    second, b = submit(pool, wf)
    old = pool.store.get_job(a.id)
    assert old.state is JobState.CANCELLED
    assert old.reason == (
        f"cancelled by pipeline {second} in concurrency group g (cancel-in-progress)"
    )
    assert pool.store.get_pipeline(first).state == "cancelled"
    assert pool.published == [a.id, b.id]


def test_cancel_in_progress_of_a_running_holder_waits_for_its_worker(
    pool: RecordingPool,
) -> None:
    wf = workflow("concurrency:\n  group: g\n  cancel-in-progress: true")
    first, a = submit(pool, wf)
    got = pool.store.claim(a.id, "runner-a", 30)
    assert got is not None
    second, b = submit(pool, wf)
    assert pool.store.get_job(a.id).cancel_requested
    assert pool.store.get_job(b.id).state is JobState.BLOCKED
    assert pool.why_waiting(pool.store.get_job(b.id)) == (
        f"waiting for concurrency group g (held by pipeline {first}, which is being "
        "cancelled: cancel-in-progress)"
    )
    # Its worker stops it and records the attempt cancelled, with the reason it was asked.
    pool.store.finish(
        a.id, got.job.attempt, JobState.CANCELLED, runner_id="runner-a", reason="cancelled"
    )
    assert pool.store.get_job(a.id).reason == (
        f"cancelled by pipeline {second} in concurrency group g (cancel-in-progress)"
    )
    pool.scheduler().advance(first)
    assert pool.store.get_job(b.id).state is JobState.QUEUED


def test_groups_are_per_repository(pool: RecordingPool) -> None:
    _, a = submit(pool, workflow("concurrency: g"))
    _, b = submit(pool, workflow("concurrency: g"), repo="git://127.0.0.1/org/lib.git")
    assert pool.published == [a.id, b.id]


def test_a_job_level_group_holds_only_that_job(pool: RecordingPool) -> None:
    wf = workflow("", "concurrency: ship-${{ github.ref_name }}")
    first, a = submit(pool, wf)
    _, b = submit(pool, wf)
    assert pool.store.get_job(b.id).concurrency == ConcurrencyGroup(name="ship-main")
    assert pool.published == [a.id]
    assert pool.why_waiting(pool.store.get_job(b.id)) == (
        f"waiting for concurrency group ship-main (held by job ship ({a.id}) of pipeline {first})"
    )
    finish(pool, a.id)
    assert pool.published == [a.id, b.id]


def test_a_reaper_pass_starts_a_waiting_run_whose_release_was_missed(
    pool: RecordingPool,
) -> None:
    _, a = submit(pool, workflow(GROUP))
    second, b = submit(pool, workflow(GROUP))
    got = pool.store.claim(a.id, "runner-a", 30)
    assert got is not None
    # The holder ends without its pipeline being advanced (its worker died after finishing).
    pool.store.finish(a.id, got.job.attempt, JobState.SUCCEEDED, runner_id="runner-a")
    assert pool.store.get_job(b.id).state is JobState.BLOCKED
    assert "was released by pipeline" in (pool.why_waiting(pool.store.get_job(b.id)) or "")
    pool.scheduler().advance(second)  # what the reaper does for every running pipeline
    assert pool.store.get_job(b.id).state is JobState.QUEUED


def test_a_holder_lost_with_its_runner_releases_the_group_on_the_reaper_pass(
    store: Store, tmp_path: Path
) -> None:
    pool = RecordingPool(load_settings(None, home=tmp_path / "home", max_attempts=1), store)
    pool.published = []
    _, a = submit(pool, workflow(GROUP))
    _, b = submit(pool, workflow(GROUP))
    assert pool.store.claim(a.id, "runner-a", 0.05) is not None
    time.sleep(0.2)  # the lease runs out: runner-a is gone
    done = Reaper(pool.store, None, pool.publish).sweep()  # type: ignore[arg-type]
    assert done.lost == [a.id]
    lost = pool.store.get_job(a.id)
    assert (lost.state, lost.reason) == (JobState.ERROR, LOST_A)
    assert pool.store.get_job(b.id).state is JobState.QUEUED
    assert pool.published == [a.id, b.id]


def test_schedulers_racing_over_a_released_group_start_the_waiting_run_once(
    pool: RecordingPool,
) -> None:
    first, a = submit(pool, workflow(GROUP))
    second, b = submit(pool, workflow(GROUP))
    got = pool.store.claim(a.id, "runner-a", 30)
    assert got is not None
    pool.store.finish(a.id, got.job.attempt, JobState.SUCCEEDED, runner_id="runner-a")
    start = threading.Barrier(4)

    def beat(pipeline_id: str) -> None:  # workers and beats advancing at the same moment
        start.wait()
        pool.scheduler().advance(pipeline_id)

    threads = [threading.Thread(target=beat, args=(p,)) for p in (first, second) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert pool.published.count(b.id) == 1, pool.published
    assert pool.store.get_job(b.id).state is JobState.QUEUED
    queued = [e for e in pool.store.events(b.id) if e.to_state == "queued"]
    assert len(queued) == 1


def test_a_cancelled_holder_job_releases_the_group_at_once(pool: RecordingPool) -> None:
    _, a = submit(pool, workflow(GROUP))
    _, b = submit(pool, workflow(GROUP))
    assert pool.cancel(a.id, by="alice").state == "cancelled"
    assert pool.store.get_job(b.id).state is JobState.QUEUED


def test_a_group_that_is_empty_for_the_run_is_refused_naming_the_field(
    pool: RecordingPool,
) -> None:
    with pytest.raises(InputError) as exc:
        submit(pool, workflow("concurrency: ${{ github.head_ref }}"))
    assert exc.value.field == "concurrency"
    assert pool.store.running_pipelines() == []


def test_racing_claims_leave_one_holder_and_one_waiting(pool: RecordingPool) -> None:
    """Eight first members claim one fresh group at once: one runs, one waits, the rest
    are superseded; whatever the order the claims land in."""
    members = []
    for _ in range(8):
        row = pool.store.create_pipeline(
            {"name": "x", "repo": REPO, "ref": "main"},
            [pipeline_job(pool.settings, pj, REPO, "main") for pj in _jobs(pool)],
        )
        members.append(row.id)
    group = ConcurrencyGroup(name="race")
    verdicts: dict[str, Verdict | None] = {}
    start = threading.Barrier(len(members))

    def ask(pid: str) -> None:
        start.wait()
        verdicts[pid] = pool.store.claim_group(pipeline_member(pid), REPO, group).verdict

    threads = [threading.Thread(target=ask, args=(m,)) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    running = [m for m, v in verdicts.items() if v is Verdict.RUN]
    assert len(running) == 1, verdicts
    live = [
        m for m in members if any(j.state is JobState.BLOCKED for j in pool.store.pipeline_jobs(m))
    ]
    slot = pool.store.concurrency_slot(REPO, "race")
    assert slot is not None and slot.holder == pipeline_member(running[0])
    # Live: the holder and at most one waiting member; every other one was superseded.
    assert running[0] in live and len(live) <= 2, live
    if len(live) == 2:
        assert slot.pending == pipeline_member(next(m for m in live if m != running[0]))


def _jobs(pool: Pool):  # type: ignore[no-untyped-def]
    from ci_pool.core.workflow.parser import parse_workflow

    return parse_workflow(workflow(""), "deploy.yml", pool.settings.capabilities).jobs
