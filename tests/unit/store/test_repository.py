"""The store on SQLite and PostgreSQL: fenced claims, leases, takeover, finish, retry, cancel."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, bindparam, column, text

from ci_pool.core.evidence import Evidence
from ci_pool.core.specs import CheckoutSpec, JobState, StepSpec
from ci_pool.core.workflow.parser import parse_workflow
from ci_pool.exceptions import NotFound
from ci_pool.service.workflow_runs import pipeline_job
from ci_pool.settings import load_settings
from ci_pool.store import Claim, FinalChunk, Job, Misrouted, Store
from ci_pool.store.models import utcnow

S = JobState
TINY_LEASE = 0.05
LOST_A = "runner_lost: no heartbeat from runner-a since the lease ended"


def new_job(store: Store, **over: Any) -> Job:
    fields: dict[str, Any] = {
        "name": "build",
        "capability": "linux",
        "queue": "linux",
        "repo": "https://git.example.com/org/app.git",
        "ref": "main",
        "steps": [{"name": "run", "run": "make"}],
        "env": {"A": "1"},
        "labels": ["linux"],
        "timeout_s": 60,
        "max_attempts": 3,
    }
    fields.update(over)
    return store.create_job(**fields)


def trail(store: Store, job_id: str) -> list[tuple[str | None, str, int, str | None]]:
    return [(e.from_state, e.to_state, e.attempt, e.reason) for e in store.events(job_id)]


def claim(store: Store, job_id: str, runner: str = "r1", lease: float = 30) -> Claim:
    got = store.claim(job_id, runner, lease)
    assert got is not None
    return got


def expire_lease() -> None:
    time.sleep(TINY_LEASE * 3)


# -- create ----------------------------------------------------------------------------


def test_create_job_writes_one_queued_event(store: Store) -> None:
    job = new_job(store)
    assert job.state == "queued"
    assert job.attempt == 0
    assert job.queued_at is not None and job.queued_at.tzinfo is not None
    assert trail(store, job.id) == [(None, "queued", 0, None)]
    got = store.get_job(job.id)
    assert (got.state, got.capability, got.env, got.steps) == (
        "queued",
        "linux",
        {"A": "1"},
        (StepSpec(name="run", run="make"),),
    )
    assert got.cancel_requested is False
    assert got.runner_id is None and got.lease_until is None


def test_the_created_job_is_the_stored_row_defaults_included(store: Store) -> None:
    """What create_job hands back (a submit's answer) is every column as a read finds it,
    the columns' defaults included, usable once its transaction is over."""
    steps = (StepSpec(name="run", run="make"),)
    for over in ({}, {"state": S.BLOCKED, "pipeline_id": "p1", "key": "build (1)"}):
        made = store.create_job(
            capability="linux",
            queue="linux",
            repo="https://git.example.com/org/app.git",
            ref="main",
            steps=steps,
            timeout_s=60,
            max_attempts=3,
            **over,
        )
        got = store.get_job(made.id)
        columns = [c.key for c in Job.__table__.columns]
        assert {k: getattr(made, k) for k in columns} == {k: getattr(got, k) for k in columns}
        assert (made.env, made.labels, made.needs, made.outputs) == ({}, [], [], {})
        assert (made.name, made.attempt, made.cancel_requested, made.fail_fast) == (
            "",
            0,
            False,
            True,
        )
        assert made.checkout == CheckoutSpec() and made.services == ()
        assert made.evidence is None and made.runner_id is None


def _write_raw(store: Store, job_id: str, steps: Any, checkout: Any) -> None:
    """Overwrite a row's steps and checkout with plain JSON, as older releases wrote them."""
    stmt = text("UPDATE jobs SET steps = :steps, checkout = :checkout WHERE id = :id")
    stmt = stmt.bindparams(bindparam("steps", type_=JSON), bindparam("checkout", type_=JSON))
    with store.engine.begin() as conn:
        conn.execute(stmt, {"steps": steps, "checkout": checkout, "id": job_id})


def test_rows_written_in_the_old_dict_shape_load_as_specs(store: Store) -> None:
    single, piped, oldest = new_job(store), new_job(store), new_job(store)
    _write_raw(
        store,
        single.id,
        [{"name": "run 1", "run": "make", "timeout": None, "continue_on_error": False}],
        {"fetch_depth": 1, "submodules": False, "lfs": False},
    )
    _write_raw(
        store,
        piped.id,
        [
            {
                "name": "Test",
                "id": "test",
                "run": "make test",
                "shell": "sh",
                "working_directory": "app",
                "env": {"GOFLAGS": "-mod=vendor"},
                "if_expr": "always()",
                "timeout": 60,
                "continue_on_error": True,
            }
        ],
        {"fetch_depth": 0, "submodules": True, "lfs": False},
    )
    # A condition the expression rules of today refuse still loads: the row was checked
    # when it was written, and the runner reports what it cannot evaluate.
    _write_raw(store, oldest.id, [{"run": "make", "if_expr": "((("}], {})
    got = store.get_job(single.id)
    assert got.steps == (StepSpec(name="run 1", run="make"),)
    assert got.checkout == CheckoutSpec()
    step = store.get_job(piped.id).steps[0]
    assert (step.id, step.shell, step.working_directory, step.if_expr) == (
        "test",
        "sh",
        "app",
        "always()",
    )
    assert (step.env, step.timeout, step.continue_on_error) == (
        {"GOFLAGS": "-mod=vendor"},
        60,
        True,
    )
    assert store.get_job(piped.id).checkout == CheckoutSpec(fetch_depth=0, submodules=True)
    assert store.get_job(oldest.id).checkout == CheckoutSpec()
    assert store.get_job(oldest.id).steps[0].if_expr == "((("
    # Read back as models, written back as the same JSON shape.
    claimed = claim(store, piped.id)
    assert claimed.job.steps[0].run == "make test"


def test_evidence_in_the_old_dict_shape_loads_as_a_record(store: Store) -> None:
    job = new_job(store)
    old = {
        "job_id": job.id,
        "runner_id": "r1",
        "attempt": 1,
        "transport": "git",
        "mode": "docker",
        "image": "busybox",
        "commit_sha": "a" * 40,
        "checkout_s": 0.25,
        "checkout_via": "network",
        "command": "make",
        "exit_code": 0,
        "stdout_sample": "ok",
        "artifacts": [{"path": "out/app.tar", "size": 3, "sha256": "b" * 64}],
        "from_a_newer_runner": "kept",
    }
    stmt = text("UPDATE jobs SET evidence = :ev WHERE id = :id")
    with store.engine.begin() as conn:
        conn.execute(stmt.bindparams(bindparam("ev", type_=JSON)), {"ev": old, "id": job.id})
    ev = store.get_job(job.id).evidence
    assert ev is not None
    assert (ev.mode, ev.checkout_s, ev.exit_code) == ("docker", 0.25, 0)
    assert ev.artifacts is not None and ev.artifacts[0].path == "out/app.tar"
    assert ev.model_dump(mode="json", exclude_none=True) == old


def test_specs_are_stored_as_plain_json(store: Store) -> None:
    job = new_job(
        store,
        steps=(StepSpec(name="b", run="make", shell="sh"),),
        checkout=CheckoutSpec(ref="v1.0", lfs=True),
    )
    stmt = text("SELECT steps, checkout FROM jobs WHERE id = :id").columns(
        column("steps", JSON), column("checkout", JSON)
    )
    with store.engine.connect() as conn:
        steps, checkout = conn.execute(stmt, {"id": job.id}).one()
    assert steps[0]["run"] == "make" and steps[0]["shell"] == "sh"
    assert {k: checkout[k] for k in ("fetch_depth", "submodules", "lfs", "ref")} == {
        "fetch_depth": 1,
        "submodules": False,
        "lfs": True,
        "ref": "v1.0",
    }
    assert store.get_job(job.id).checkout.ref == "v1.0"


REF_WORKFLOW = """\
name: refs
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - uses: actions/checkout@v4
        with:
          ref: release/1.2
          fetch-depth: 0
      - id: make
        run: make
        shell: sh
        working-directory: app
        env:
          MODE: release
        if: always()
        timeout-minutes: 2
"""


def test_checkout_ref_and_steps_survive_parse_submit_store_and_claim(
    store: Store, tmp_path: Path
) -> None:
    settings = load_settings(None, home=tmp_path / "home")
    parsed = parse_workflow(REF_WORKFLOW, "wf.yml", settings.capabilities).jobs[0]
    new = pipeline_job(settings, parsed, "git://x/r.git", "main")
    pipe = store.create_pipeline({"name": "refs", "repo": "git://x/r.git", "ref": "main"}, [new])
    (row,) = store.pipeline_jobs(pipe.id)
    store.transition(row.id, JobState.QUEUED)
    job = claim(store, row.id).job  # what the runner reads
    assert job.steps[0].checkout == CheckoutSpec(fetch_depth=0, ref="release/1.2")
    assert job.steps == parsed.spec.steps
    step = job.steps[1]
    assert (step.id, step.shell, step.working_directory, step.env, step.timeout) == (
        "make",
        "sh",
        "app",
        {"MODE": "release"},
        120,
    )
    assert step.if_expr == "always()"


def test_create_blocked_job(store: Store) -> None:
    job = new_job(store, state=S.BLOCKED, id="j-blocked")
    assert job.id == "j-blocked"
    assert job.state == "blocked"
    assert job.queued_at is None
    assert trail(store, job.id) == [(None, "blocked", 0, None)]
    assert store.claim(job.id, "r1", 30) is None


def test_job_ids_are_unique(store: Store) -> None:
    assert len({new_job(store).id for _ in range(20)}) == 20


def test_get_unknown_job(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_job("nope")
    with pytest.raises(NotFound):
        store.request_cancel("nope")


def test_list_jobs(store: Store) -> None:
    a = new_job(store)
    b = new_job(store, capability="android", queue="android")
    claim(store, a.id)
    assert {j.id for j in store.list_jobs()} == {a.id, b.id}
    assert [j.id for j in store.list_jobs(states=[S.RUNNING])] == [a.id]
    assert [j.id for j in store.list_jobs(capability="android")] == [b.id]
    assert store.list_jobs(states=[S.QUEUED], capability="linux") == []


def test_init_schema_is_idempotent(store: Store) -> None:
    job = new_job(store)
    store.init_schema()
    assert store.get_job(job.id).state == "queued"


# -- claim -----------------------------------------------------------------------------


def test_claim_queued_job(store: Store) -> None:
    job = new_job(store)
    before = utcnow()
    got = claim(store, job.id, "runner-a", 30)
    assert got.took_over is None
    j = got.job
    assert (j.state, j.attempt, j.runner_id) == ("running", 1, "runner-a")
    assert j.lease_until is not None
    assert before + timedelta(seconds=29) < j.lease_until <= utcnow() + timedelta(seconds=30)
    assert j.started_at is not None and j.started_at >= before
    assert trail(store, job.id)[-1] == ("queued", "running", 1, None)
    assert store.events(job.id)[-1].runner_id == "runner-a"


def test_second_claim_is_fenced_off(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id, "runner-a")
    assert store.claim(job.id, "runner-b", 30) is None
    j = store.get_job(job.id)
    assert (j.state, j.attempt, j.runner_id) == ("running", 1, "runner-a")
    assert len(store.events(job.id)) == 2


def test_claim_unknown_job(store: Store) -> None:
    assert store.claim("nope", "r1", 30) is None


# -- heartbeat -------------------------------------------------------------------------


def test_heartbeat_extends_the_lease(store: Store) -> None:
    job = new_job(store)
    first = claim(store, job.id, lease=1).job.lease_until
    assert first is not None
    assert store.heartbeat(job.id, 1, 60) is False
    later = store.get_job(job.id).lease_until
    assert later is not None and later > first + timedelta(seconds=30)


def test_heartbeat_with_the_wrong_attempt(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id)
    assert store.heartbeat(job.id, 2, 30) is None
    assert store.heartbeat(job.id, 0, 30) is None
    assert store.heartbeat("nope", 1, 30) is None


def test_heartbeat_of_a_job_not_running(store: Store) -> None:
    job = new_job(store)
    assert store.heartbeat(job.id, 0, 30) is None
    claim(store, job.id)
    store.finish(job.id, 1, S.SUCCEEDED, runner_id="r1", exit_code=0)
    assert store.heartbeat(job.id, 1, 30) is None


# -- takeover of a lost runner's job ---------------------------------------------------


def test_claim_after_lease_expiry_takes_over(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id, "runner-a", TINY_LEASE)
    expire_lease()
    got = claim(store, job.id, "runner-b", 30)
    assert got.took_over == 1
    j = got.job
    assert (j.state, j.attempt, j.runner_id) == ("running", 2, "runner-b")
    assert trail(store, job.id) == [
        (None, "queued", 0, None),
        ("queued", "running", 1, None),
        ("running", "error", 1, LOST_A),
        ("error", "queued", 1, "retry 2/3"),
        ("queued", "running", 2, None),
    ]
    assert [e.runner_id for e in store.events(job.id)[2:]] == ["runner-b"] * 3
    # The lost runner's fence no longer matches.
    assert store.heartbeat(job.id, 1, 30) is None
    assert store.finish(job.id, 1, S.SUCCEEDED, runner_id="runner-a", exit_code=0) is None
    assert store.heartbeat(job.id, 2, 30) is False


def test_live_lease_is_not_taken_over(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id, "runner-a", 0.5)
    # 0.6 s in all, past the first lease, but never more than 0.2 s since a heartbeat.
    for _ in range(3):
        time.sleep(0.2)
        assert store.heartbeat(job.id, 1, 0.5) is False
        assert store.claim(job.id, "runner-b", 30) is None
    assert store.get_job(job.id).runner_id == "runner-a"


def test_takeover_at_max_attempts_ends_in_error(store: Store) -> None:
    job = new_job(store, max_attempts=1)
    claim(store, job.id, "runner-a", TINY_LEASE)
    expire_lease()
    assert store.claim(job.id, "runner-b", 30) is None
    j = store.get_job(job.id)
    assert (j.state, j.attempt, j.reason) == ("error", 1, LOST_A)
    assert j.lease_until is None and j.finished_at is not None
    assert trail(store, job.id)[-1] == ("running", "error", 1, LOST_A)
    assert store.claim(job.id, "runner-c", 30) is None


def test_cancelled_job_whose_runner_dies_does_not_stay_queued(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id, "runner-a", TINY_LEASE)
    store.request_cancel(job.id, "alice")
    expire_lease()
    assert store.claim(job.id, "runner-b", 30) is None
    j = store.get_job(job.id)
    assert JobState(j.state) is S.CANCELLED, (j.state, trail(store, job.id))


# -- finish ----------------------------------------------------------------------------


def test_finish_succeeded(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id)
    done = store.finish(
        job.id, 1, S.SUCCEEDED, runner_id="r1", exit_code=0, evidence=Evidence(exit_code=0)
    )
    assert done is not None
    assert (done.state, done.exit_code, done.evidence) == ("succeeded", 0, Evidence(exit_code=0))
    assert store.get_job(job.id).evidence == Evidence(exit_code=0)
    assert done.lease_until is None and done.finished_at is not None
    assert trail(store, job.id)[-1] == ("running", "succeeded", 1, None)
    # A final state does not move again.
    assert store.finish(job.id, 1, S.FAILED, runner_id="r1", exit_code=1) is None
    assert store.claim(job.id, "r2", 30) is None


@pytest.mark.parametrize("state", [S.FAILED, S.TIMED_OUT, S.CANCELLED])
def test_finish_other_outcomes(store: Store, state: JobState) -> None:
    job = new_job(store)
    claim(store, job.id)
    done = store.finish(job.id, 1, state, runner_id="r1", exit_code=1, reason="why")
    assert done is not None and (done.state, done.reason) == (state.value, "why")


def test_finish_with_a_stale_attempt(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id)
    assert store.finish(job.id, 2, S.SUCCEEDED, runner_id="r1", exit_code=0) is None
    assert store.finish(job.id, 0, S.SUCCEEDED, runner_id="r1", exit_code=0) is None
    assert store.get_job(job.id).state == "running"


def test_finish_a_job_that_is_not_running(store: Store) -> None:
    job = new_job(store)
    assert store.finish(job.id, 0, S.SUCCEEDED, runner_id="r1", exit_code=0) is None
    assert store.get_job(job.id).state == "queued"


def test_finish_error_with_retry_requeues_until_max_attempts(store: Store) -> None:
    job = new_job(store, max_attempts=3)
    for attempt in (1, 2):
        assert claim(store, job.id).job.attempt == attempt
        done = store.finish(job.id, attempt, S.ERROR, runner_id="r1", reason="infra")
        assert done is not None
        assert (done.state, done.attempt) == ("queued", attempt)
        assert trail(store, job.id)[-2:] == [
            ("running", "error", attempt, "infra"),
            ("error", "queued", attempt, f"retry {attempt + 1}/3"),
        ]
    assert claim(store, job.id).job.attempt == 3
    done = store.finish(job.id, 3, S.ERROR, runner_id="r1", reason="infra")
    assert done is not None
    assert (done.state, done.attempt, done.reason) == ("error", 3, "infra")
    assert trail(store, job.id)[-1] == ("running", "error", 3, "infra")
    assert store.claim(job.id, "r1", 30) is None


def test_close_attempt_gives_the_backoff_of_the_retry_policy(store: Store) -> None:
    job = new_job(store, max_attempts=3)
    claim(store, job.id)
    closed = store.close_attempt(job.id, 1, S.ERROR, runner_id="r1", reason="infra", backoff=5)
    assert closed is not None
    done, decision = closed
    assert (done.state, decision.delay) == ("queued", 5)
    claim(store, job.id)
    closed = store.close_attempt(job.id, 2, S.ERROR, runner_id="r1", reason="infra", backoff=5)
    assert closed is not None and closed[1].delay == 10


def test_retry_only_applies_to_error(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id)
    done = store.finish(job.id, 1, S.FAILED, runner_id="r1", exit_code=2)
    assert done is not None and done.state == "failed"


def test_error_of_a_cancel_requested_job_ends_cancelled(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id)
    store.request_cancel(job.id)
    done = store.finish(job.id, 1, S.ERROR, runner_id="r1", reason="infra")
    assert done is not None and done.state == "cancelled"
    assert trail(store, job.id)[-2:] == [
        ("running", "error", 1, "infra"),
        ("error", "cancelled", 1, "cancelled (its attempt ended in error)"),
    ]


def test_requeued_job_resets_the_attempt_fields(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id)
    store.finish(job.id, 1, S.ERROR, runner_id="r1", exit_code=7, reason="infra")
    j = claim(store, job.id, "r2").job
    assert (j.attempt, j.exit_code, j.reason, j.finished_at, j.runner_id) == (
        2,
        None,
        None,
        None,
        "r2",
    )


# -- cancel ----------------------------------------------------------------------------


def test_cancel_queued_job_at_once(store: Store) -> None:
    job = new_job(store)
    done = store.request_cancel(job.id, "alice")
    assert done.state == "cancelled"
    assert done.cancel_requested is True
    assert done.finished_at is not None
    assert trail(store, job.id)[-1] == ("queued", "cancelled", 0, "cancelled by alice")
    assert store.claim(job.id, "r1", 30) is None


def test_cancel_blocked_job_at_once(store: Store) -> None:
    job = new_job(store, state=S.BLOCKED)
    assert store.request_cancel(job.id).state == "cancelled"
    assert trail(store, job.id)[-1] == ("blocked", "cancelled", 0, "cancelled by user")


def test_cancel_running_job_flags_it(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id)
    j = store.request_cancel(job.id, "bob")
    assert (j.state, j.cancel_requested) == ("running", True)
    assert store.heartbeat(job.id, 1, 30) is True
    assert len(store.events(job.id)) == 2
    done = store.finish(job.id, 1, S.CANCELLED, runner_id="r1", reason="cancelled by bob")
    assert done is not None and done.state == "cancelled"


def test_cancel_a_finished_job_changes_nothing(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id)
    store.finish(job.id, 1, S.SUCCEEDED, runner_id="r1", exit_code=0)
    j = store.request_cancel(job.id)
    assert (j.state, j.cancel_requested) == ("succeeded", False)
    assert len(store.events(job.id)) == 3


# -- generic transition ----------------------------------------------------------------


def test_transition_follows_the_table(store: Store) -> None:
    job = new_job(store)
    assert store.transition(job.id, S.SUCCEEDED) is None
    done = store.transition(job.id, S.ERROR, reason="broker_unavailable: x")
    assert done is not None and done.state == "error"
    assert store.transition(job.id, S.RUNNING) is None
    assert trail(store, job.id)[-1] == ("queued", "error", 0, "broker_unavailable: x")


def test_transition_attempt_fence(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id)
    assert store.transition(job.id, S.FAILED, attempt=2) is None
    done = store.transition(job.id, S.FAILED, attempt=1)
    assert done is not None and done.state == "failed"


# -- concurrency -----------------------------------------------------------------------


def _race(claimers: list[Store], job_id: str) -> list[Claim | None]:
    barrier = threading.Barrier(len(claimers))
    results: list[Claim | None] = [None] * len(claimers)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = claimers[i].claim(job_id, f"runner-{i}", 30)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(claimers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


def test_concurrent_claims_exactly_one_wins(store: Store) -> None:
    job = new_job(store)
    results = _race([store] * 8, job.id)
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    j = store.get_job(job.id)
    assert (j.state, j.attempt, j.runner_id) == ("running", 1, winners[0].job.runner_id)
    assert [e.to_state for e in store.events(job.id)] == ["queued", "running"]


def test_concurrent_claims_from_separate_engines(store: Store) -> None:
    job = new_job(store)
    others = [Store(store.url) for _ in range(8)]
    try:
        results = _race(others, job.id)
    finally:
        for o in others:
            o.close()
    assert sum(r is not None for r in results) == 1
    assert [e.to_state for e in store.events(job.id)] == ["queued", "running"]


def test_concurrent_takeover_exactly_one_wins(store: Store) -> None:
    job = new_job(store)
    claim(store, job.id, "lost", TINY_LEASE)
    expire_lease()
    results = _race([store] * 8, job.id)
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].took_over == 1
    assert [e.to_state for e in store.events(job.id)] == [
        "queued",
        "running",
        "error",
        "queued",
        "running",
    ]


# -- the runner's two store calls a job: the claim and the outcome -----------------------


def test_a_job_for_runners_by_name_is_not_claimed_by_another_runner(store: Store) -> None:
    job = new_job(store, runner="build-*")
    got = store.claim(job.id, "laptop-1", 30)
    assert isinstance(got, Misrouted)
    assert (got.runners, got.state, got.capability) == ("build-*", S.QUEUED, "linux")
    left = store.get_job(job.id)
    assert (left.state, left.attempt, left.runner_id) == (S.QUEUED, 0, None)
    assert claim(store, job.id, "build-2").job.runner_id == "build-2"


def test_the_last_log_chunk_is_stored_with_the_outcome(store: Store) -> None:
    job = new_job(store)
    attempt = claim(store, job.id).job.attempt
    store.append_log(job.id, attempt, 0, "one\n")
    closed = store.close_attempt(
        job.id, attempt, S.SUCCEEDED, runner_id="r1", log=FinalChunk(1, "two\nsucceeded\n")
    )
    assert closed is not None and closed[0].state == S.SUCCEEDED
    assert store.read_log(job.id) == "one\ntwo\nsucceeded\n"
