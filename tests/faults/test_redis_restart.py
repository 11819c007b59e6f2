"""The broker restarts under a running pool: with its append-only file (messages kept), and
without persistence (messages gone, the reaper sends them again). Each test runs its own
redis-server, so restarting it touches no other test.

What a restart does to the job that is running at that moment: Celery cannot ack a late-ack
message after a connection loss, and with ``worker_cancel_long_running_tasks_on_connection_loss``
(ci_pool/broker/app.py) it terminates the task's process. The job stays ``running`` in the store
until its lease runs out; the reaper then closes that attempt as ``error/runner_lost`` and runs it
again. So these tests run the reaper (``ci-pool beat --once``) while they wait, as a deployment
runs ``ci-pool beat`` beside its workers.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from ci_pool.broker.keys import unacked_keys
from ci_pool.core.specs import FINAL_STATES, JobState, parse_job_spec
from ci_pool.embedded import RedisServer
from ci_pool.service.pool import Pool
from tests.conftest import (
    FAST_TIMINGS,
    GitServer,
    Harness,
    Worker,
    containers_left,
    write_config,
)
from tests.waiting import until

pytestmark = pytest.mark.faults

JOBS = 6
SENTINEL = "test:redis-restart:sentinel"
FINAL = frozenset(s.value for s in FINAL_STATES)


@dataclass
class RestartablePool:
    """A pool on its own redis-server, which the test may stop and start again."""

    h: Harness
    server: RedisServer
    workdir: Path
    appendonly: bool
    #: The append-only files as redis-server left them at the last restart.
    aof: str = ""

    def restart(self) -> float:
        """SIGTERM redis-server (it fsyncs its AOF on the way out), start it again on the
        same port with the same files; returns how long the broker was away. Checks that
        the data survived with the AOF, and that it is gone without it."""
        redis.Redis.from_url(self.server.url).set(SENTINEL, "1")
        port = self.server.port
        down = time.monotonic()
        self.server.stop()
        assert self.server.proc.returncode == 0, self.log()
        self.aof = "".join(
            f.read_text(errors="replace") for f in sorted(self.workdir.rglob("*.aof"))
        )
        self.server = RedisServer.start(self.workdir, port, appendonly=self.appendonly)
        away = time.monotonic() - down
        kept = redis.Redis.from_url(self.server.url).exists(SENTINEL)
        assert kept == self.appendonly, self.log()
        return away

    def log(self) -> str:
        return (self.workdir / "redis.log").read_text(errors="replace")

    def stop(self) -> None:
        try:
            self.h.stop()
        finally:
            self.server.stop()


def _restartable(tmp_path: Path, image: str, *, appendonly: bool) -> RestartablePool:
    workdir = tmp_path / "r"
    server = RedisServer.start(workdir, appendonly=appendonly)
    try:
        root = tmp_path / "pool"
        root.mkdir()
        h = Harness(root, server.url, {**FAST_TIMINGS, "resend_after": 0})
        write_config(h.config, image)
    except BaseException:
        server.stop()
        raise
    return RestartablePool(h, server, workdir, appendonly)


@pytest.fixture
def aof_pool(tmp_path: Path, busybox_image: str) -> Iterator[RestartablePool]:
    p = _restartable(tmp_path, busybox_image, appendonly=True)
    yield p
    p.stop()


@pytest.fixture
def volatile_pool(tmp_path: Path, busybox_image: str) -> Iterator[RestartablePool]:
    p = _restartable(tmp_path, busybox_image, appendonly=False)
    yield p
    p.stop()


def submit_all(pool: Pool, git: GitServer, n: int = JOBS) -> list[str]:
    """``sleep 1; echo <i>`` jobs to linux, at the repo's full SHA (no ls-remote)."""
    ids = []
    for i in range(n):
        spec = parse_job_spec(
            {
                "repo": git.url(),
                "ref": git.shas["app.git"],
                "capability": "linux",
                "steps": [{"run": f"sleep 1; echo job-{i}"}],
                "name": f"restart-{i}",
            },
            allow_local_repos=False,
        )
        ids.append(pool.submit(spec).id)
    return ids


def states(pool: Pool, ids: list[str]) -> dict[str, str]:
    return {job_id: pool.get(job_id).state for job_id in ids}


def transitions(pool: Pool, job_id: str) -> list[tuple[str | None, str, int]]:
    return [(e.from_state, e.to_state, e.attempt) for e in pool.store.events(job_id)]


def wait_mid_run(pool: Pool, ids: list[str], timeout: float = 60) -> dict[str, str]:
    """Until one job has succeeded, one is past its claim and at least two are queued."""
    deadline = time.monotonic() + timeout
    while True:
        now = states(pool, ids)
        counts = Counter(now.values())
        if counts["succeeded"] >= 1 and counts["running"] == 1 and counts["queued"] >= 2:
            return now
        assert time.monotonic() < deadline, f"never mid-run within {timeout:.0f}s: {now}"
        time.sleep(0.05)


def sweep_until_final(
    p: RestartablePool, pool: Pool, ids: list[str], timeout: float, give_up: bool = True
) -> tuple[dict[str, str], list[str]]:
    """Run the reaper (``ci-pool beat --once``, as ``ci-pool beat`` would in a loop) until
    every job is final; returns the final states and what each sweep said (or, with
    ``give_up=False``, the states reached when the time is up)."""
    said: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        now = states(pool, ids)
        if all(s in FINAL for s in now.values()):
            return now, said
        if time.monotonic() > deadline:
            if not give_up:
                return now, said
            logs = "\n".join(w.log.read_text(errors="replace")[-4000:] for w in p.h.workers)
            pytest.fail(f"jobs not final after {timeout:.0f}s: {now}\n{said}\n{logs}")
        res = p.h.cli("beat", "--once", timeout=30)
        assert res.returncode == 0, res.stderr
        said.append(res.stderr.strip())
        time.sleep(0.5)


def wait_registered(p: RestartablePool, pool: Pool, worker: Worker, timeout: float = 30) -> None:
    """The worker's registration (lost with a volatile broker) is back."""
    deadline = time.monotonic() + timeout
    while not [r for r in pool.runners("linux") if r.runner_id == worker.runner_id]:
        assert time.monotonic() < deadline, f"worker not registered again:\n{p.log()}"
        time.sleep(0.2)


def check_ran_once(pool: Pool, ids: list[str], final: dict[str, str]) -> dict[str, list[Any]]:
    """Every job succeeded, through exactly one ``running -> succeeded`` and with no
    attempt claimed twice; returns the transitions of each job."""
    assert final == dict.fromkeys(ids, JobState.SUCCEEDED.value)
    history = {job_id: transitions(pool, job_id) for job_id in ids}
    for job_id, events in history.items():
        done = [e for e in events if e[:2] == ("running", "succeeded")]
        assert len(done) == 1, (job_id, events)
        claims = [e[2] for e in events if e[:2] == ("queued", "running")]
        assert len(claims) == len(set(claims)), (job_id, events)
        assert done[0][2] == claims[-1] == pool.get(job_id).attempt, (job_id, events)
        log = pool.store.read_log(job_id)
        assert f"job-{ids.index(job_id)}" in log.splitlines(), (job_id, log)
    return history


ONCE = [("queued", "running", 1), ("running", "succeeded", 1)]


def test_jobs_survive_a_broker_restart_with_aof(
    aof_pool: RestartablePool, git_server: GitServer, docker_client: Any
) -> None:
    p = aof_pool
    worker = p.h.start_worker("linux", concurrency=1)
    pool = p.h.pool()
    ids = submit_all(pool, git_server)
    before = wait_mid_run(pool, ids)
    running = next(j for j, s in before.items() if s == "running")
    queued = [j for j, s in before.items() if s == "queued"]
    away = p.restart()
    assert away < 10
    for job_id in queued:
        assert job_id in p.aof, f"job {job_id}'s message is not in the append-only file"
    final, _said = sweep_until_final(p, pool, ids, timeout=60)
    wait_registered(p, pool, worker)
    history = check_ran_once(pool, ids, final)
    # The queued messages came back from the append-only file and each ran once, at
    # attempt 1. (The reaper may still send one again: the first message the worker takes
    # after reconnecting is out of the list and not yet in 'unacked' for ~0.1 s. The
    # duplicate finds nothing to claim.)
    for job_id in queued:
        assert history[job_id][1:] == ONCE, (job_id, history[job_id])
    # The job running at the restart either finished, or (killed by Celery on the lost
    # connection) was found by the reaper once its lease ran out and ran again.
    if history[running][1:] != ONCE:
        assert ("running", "error", 1) in history[running], history[running]
        assert pool.get(running).attempt == 2
    assert containers_left(docker_client, running) == []


def test_lost_messages_are_resent_after_a_volatile_broker_restart(
    volatile_pool: RestartablePool, git_server: GitServer, docker_client: Any
) -> None:
    p = volatile_pool
    worker = p.h.start_worker("linux", concurrency=1)
    pool = p.h.pool()
    ids = submit_all(pool, git_server)
    before = wait_mid_run(pool, ids)
    running = next(j for j, s in before.items() if s == "running")
    queued = [j for j, s in before.items() if s == "queued"]
    p.restart()
    final, said = sweep_until_final(p, pool, ids, timeout=60)
    wait_registered(p, pool, worker)
    history = check_ran_once(pool, ids, final)
    # Every queued message was gone with the broker's memory: the reaper sent each again.
    for job_id in queued:
        assert any(job_id in line for line in said), (job_id, said)
        assert history[job_id][1:] == ONCE, (job_id, history[job_id])
    if history[running][1:] != ONCE:
        assert ("running", "error", 1) in history[running], history[running]
        assert pool.get(running).attempt == 2
    assert containers_left(docker_client, running) == []


def test_a_message_taken_but_never_claimed_is_sent_again(
    aof_pool: RestartablePool, git_server: GitServer
) -> None:
    """A worker dies holding a job's message before it could claim the job (its claim waits
    for the store's write lock): the job is still ``queued`` and its message sits in
    ``unacked`` until the visibility timeout, hours away. The reaper sends it again."""
    p = aof_pool
    p.h.overrides["resend_unacked_after"] = 2
    worker = p.h.start_worker("linux", concurrency=1)
    pool = p.h.pool()
    control = pool.celery.control
    node = next(r.node for r in pool.runners("linux") if r.runner_id == worker.runner_id)
    unacked = unacked_keys("linux")[0]
    if not control.cancel_consumer("linux", destination=[node], reply=True):
        pytest.fail("the worker did not stop consuming")
    ids = submit_all(pool, git_server, 3)
    lock = sqlite3.connect(p.h.root / "home" / "ci-pool.db", isolation_level=None, timeout=30)
    try:
        lock.execute("BEGIN IMMEDIATE")  # every claim now waits
        control.add_consumer("linux", destination=[node], reply=True)
        broker = redis.Redis.from_url(p.server.url)
        deadline = time.monotonic() + 30
        while worker.log.read_text(errors="replace").count(" received") < 1 or not broker.hlen(
            unacked
        ):
            if time.monotonic() > deadline:
                pytest.fail(f"the worker took no message:\n{worker.log.read_text()}")
            time.sleep(0.1)

        def started() -> bool:
            """The pool process runs the task: its claim is waiting for the lock."""
            active = control.inspect(destination=[node], timeout=1).active() or {}
            return any(task.get("worker_pid") for task in active.get(node, []))

        until(started, "the task started in a pool process", timeout=30)
        worker.kill()  # SIGKILL: the message stays in 'unacked', the job stays queued
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert redis.Redis.from_url(p.server.url).hlen(unacked) == 1
    assert all(pool.get(i).state == JobState.QUEUED.value for i in ids)
    p.h.start_worker("linux", concurrency=1)
    final, said = sweep_until_final(p, pool, ids, timeout=20, give_up=False)
    assert final == dict.fromkeys(ids, JobState.SUCCEEDED.value), (final, said)
    check_ran_once(pool, ids, final)


def test_a_registered_runner_keeps_its_redis_user_across_a_volatile_restart(
    volatile_pool: RestartablePool, git_server: GitServer, tmp_path: Path
) -> None:
    """Redis without an ACL file forgets every user at a restart. The pool re-creates the
    users of its active runners (same password digest, from the store) at the reaper's next
    sweep and when the API starts, so a registered runner's worker waits instead of exiting
    and runs jobs again; a runner revoked before the restart gets no user back."""
    from ci_pool.api.server import make_server, running
    from ci_pool.embedded import free_port
    from ci_pool.service import identities

    p = volatile_pool
    h = p.h
    pool = h.pool()
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    name, user = "rr-host-linux-1", "runner-rr-host-linux-1"
    with running(make_server(h.settings(), "127.0.0.1", port, log_level="warning")):
        token = identities.create_token(pool, ["linux"], identities.lifetime("1h"), by="test")
        made = identities.create_token(pool, ["linux"], identities.lifetime("1h"), by="test")
        revoked = identities.register(pool, made.token, "rr-host-linux-9", host="rr-host")
        identities.revoke(pool, revoked.name, by="test-admin")
        overrides = {
            **h.overrides,
            "api_url": api,
            "runner_credential_file": str(tmp_path / "runner" / "credential"),
            "runner_id": name,
            "registration_token": token.token,
        }
        runner = dataclasses.replace(h, overrides=overrides, workers=[])
        worker = runner.start_worker("linux")
        try:
            first = h.submit(git_server, "echo before the restart")
            done = pool.wait(first, timeout=60)
            assert done.state == JobState.SUCCEEDED and done.runner_id == name, (
                worker.log.read_text()[-4000:]
            )
            passwords = redis.Redis.from_url(p.server.url).acl_getuser(user)["passwords"]
            assert len(passwords) == 1

            p.restart()
            broker = redis.Redis.from_url(p.server.url)
            assert broker.acl_getuser(user) is None  # Redis forgot it
            # The worker is refused, asks the pool, and waits rather than exiting.
            worker.wait_log("waiting for the pool to re-create the user", timeout=30)
            assert worker.proc.poll() is None, worker.log.read_text()[-4000:]

            res = h.cli("beat", "--once", timeout=30)
            assert res.returncode == 0, res.stderr
            assert f"1 runner Redis user(s) re-created ({name})" in res.stderr
            assert broker.acl_getuser(user)["passwords"] == passwords
            assert broker.acl_getuser("runner-" + revoked.name) is None
            with pytest.raises(redis.exceptions.AuthenticationError):
                redis.Redis.from_url(
                    p.server.url, username=revoked.redis_username, password=revoked.redis_password
                ).ping()

            second = h.submit(git_server, "echo after the restart")
            done = pool.wait(second, timeout=90)
            assert done.state == JobState.SUCCEEDED and done.runner_id == name, (
                worker.log.read_text()[-4000:]
            )
            assert "after the restart" in pool.store.read_log(second)
        finally:
            worker.stop()
    # The API, when it starts, puts back what Redis lost meanwhile.
    p.restart()
    assert redis.Redis.from_url(p.server.url).acl_getuser(user) is None
    with running(make_server(h.settings(), "127.0.0.1", free_port(), log_level="warning")):
        assert redis.Redis.from_url(p.server.url).acl_getuser(user)["passwords"] == passwords
        assert redis.Redis.from_url(p.server.url).acl_getuser("runner-" + revoked.name) is None
