"""The commit-status outbox on SQLite and PostgreSQL: every change of a job with a commit
is noted in its own transaction, the newest change wins, and a row is sent by one sender
at a time."""

from __future__ import annotations

from ci_pool.core.specs import JobState
from ci_pool.store import Job, Store
from ci_pool.store.outbox import delivered, due, failed, outbox_row, take

SHA = "3249d9655d98e761ab861a41e22da4076c82bddd"


def new_job(store: Store, sha: str | None = SHA) -> Job:
    return store.create_job(
        name="build",
        capability="linux",
        queue="linux",
        repo="https://git.example.com/org/app.git",
        ref="main",
        commit_sha=sha,
        steps=(),
        timeout_s=60,
        max_attempts=3,
    )


def test_each_change_is_noted_and_a_job_without_commit_has_no_row(store: Store) -> None:
    job = new_job(store)
    row = outbox_row(store, job.id)
    assert row is not None and (row.seq, row.sent_seq) == (1, 0)
    assert store.claim(job.id, "r1", 30) is not None
    assert store.finish(job.id, 1, JobState.SUCCEEDED, runner_id="r1", exit_code=0)
    row = outbox_row(store, job.id)
    assert row is not None and row.seq == 3
    assert due(store) == [job.id]
    assert outbox_row(store, new_job(store, sha=None).id) is None


def test_a_change_during_a_send_is_sent_again_and_the_lease_keeps_one_sender(
    store: Store,
) -> None:
    job = new_job(store)
    first = take(store, job.id, 60)
    assert first is not None and first.seq == 1
    assert take(store, job.id, 60) is None  # a second sender finds it held
    assert due(store) == []
    store.claim(job.id, "r1", 30)  # the job moves on while "queued" is being posted
    delivered(store, first, "pending")
    row = outbox_row(store, job.id)
    assert row is not None and row.sent_seq == 1 and row.seq == 2
    assert due(store) == [job.id]  # the newer state is still owed
    second = take(store, job.id, 60)
    assert second is not None and second.seq == 2
    delivered(store, second, "pending")
    assert due(store) == [] and take(store, job.id, 60) is None


def test_failures_count_per_change_and_giving_up_stops_the_row(store: Store) -> None:
    job = new_job(store)
    taken = take(store, job.id, 60)
    assert taken is not None
    failed(store, taken, "HTTP 500", 3600)
    row = outbox_row(store, job.id)
    assert row is not None and row.tries == 1 and row.last_error == "HTTP 500"
    assert due(store) == []  # waits out its backoff
    store.claim(job.id, "r1", 30)  # a new state resets the count and is due at once
    row = outbox_row(store, job.id)
    assert row is not None and row.tries == 0 and due(store) == [job.id]
    taken = take(store, job.id, 60)
    assert taken is not None
    failed(store, taken, "HTTP 401", None)
    row = outbox_row(store, job.id)
    assert row is not None and row.gave_up and due(store) == []
    assert take(store, job.id, 60) is None
