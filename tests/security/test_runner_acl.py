"""Runner identity against a real Redis ACL, the API on loopback and real workers: a
registered runner's Redis user reaches only its own capability's keys, and revocation
cuts it off (connection dropped, AUTH refused, worker exits, its job re-run elsewhere)."""

from __future__ import annotations

import dataclasses
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ci_pool import defaults
from ci_pool.broker.keys import log_stream_key, runner_key, unacked_keys
from ci_pool.core.specs import JobState
from ci_pool.embedded import RedisServer
from ci_pool.service import identities
from tests.conftest import GitServer, Harness, isolated_harness

DB = 12


@pytest.fixture(scope="module")
def id_pool(session_dir: Path, redis_server: RedisServer, busybox_image: str) -> Iterator[Harness]:
    h = isolated_harness(session_dir / "identity", redis_server, busybox_image, DB)
    yield h
    h.stop()


@pytest.fixture(scope="module")
def id_api(id_pool: Harness) -> Iterator[str]:
    from ci_pool.api.server import make_server, running
    from ci_pool.embedded import free_port

    port = free_port()
    with running(make_server(id_pool.settings(), "127.0.0.1", port, log_level="warning")):
        yield f"http://127.0.0.1:{port}"


def _as_user(url: str, username: str, password: str) -> redis.Redis:
    return redis.Redis.from_url(url, username=username, password=password, socket_timeout=5)


def test_a_runner_user_reaches_only_its_capability_and_is_cut_off_by_revoke(
    id_pool: Harness,
) -> None:
    pool = id_pool.pool()
    made = identities.create_token(pool, ["linux"], identities.lifetime("1h"), by="test")
    reg = identities.register(pool, made.token, "acl-host-linux-1", host="acl-host")
    r = _as_user(id_pool.redis_url, reg.redis_username, reg.redis_password)
    assert r.execute_command("ACL", "WHOAMI") == b"runner-acl-host-linux-1"
    # Its own queue, unacked keys and heartbeat: allowed.
    r.lrange("linux", 0, -1)
    r.hgetall(unacked_keys("linux")[0])
    r.hset(runner_key("acl-host-linux-1"), "x", "1")
    r.smembers("_kombu.binding.ci-pool")
    denied = [
        # No job's log stream, even of its capability, while it holds no claim.
        lambda: r.xadd(log_stream_key("linux", "some-job"), {"l": "forged"}),
        lambda: r.brpop(["android"], timeout=1),
        lambda: r.lrange("android", 0, -1),
        lambda: r.lpush("iso", "stolen"),
        lambda: r.hgetall(unacked_keys("android")[0]),
        lambda: r.xadd(log_stream_key("android", "j"), {"l": "forged"}),
        lambda: r.hset(runner_key("someone-else"), "x", "1"),
        lambda: r.set(defaults.SIGNATURE_SEEN_KEY.format(mac="m"), "1"),
        # Binding another capability's routing key to its own queue would steal its jobs.
        lambda: r.sadd("_kombu.binding.ci-pool", "iso\x06\x16\x06\x16linux"),
        lambda: r.get("any-other-key"),
        lambda: r.flushall(),
        lambda: r.config_get("*"),
        lambda: r.execute_command("ACL", "LIST"),
        lambda: r.execute_command("ACL", "SETUSER", "runner-acl-host-linux-1", "allkeys"),
        lambda: r.keys("*"),
        # Control replies meant for whoever asked (celery control, Flower, runner exec).
        lambda: r.lrange("someone.reply.celery.pidbox", 0, -1),
        lambda: r.brpop(["someone.reply.celery.pidbox"], timeout=1),
    ]
    for i, call in enumerate(denied):
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
            pytest.fail(f"call {i} was allowed")
    pool.redis.delete(runner_key("acl-host-linux-1"))

    row = identities.revoke(pool, "acl-host-linux-1", by="test-admin")
    assert row.revoked_by == "test-admin"
    # Its open connection is dropped, and it cannot authenticate again.
    with pytest.raises(redis.exceptions.AuthenticationError):
        r.ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        _as_user(id_pool.redis_url, reg.redis_username, reg.redis_password).ping()


def test_a_runner_reaches_the_log_stream_of_a_job_only_while_it_holds_the_claim(
    id_pool: Harness, id_api: str, git_server: GitServer
) -> None:
    h = id_pool
    pool = h.pool()
    regs = []
    for name in ("logs-host-linux-1", "logs-host-linux-2"):
        made = identities.create_token(pool, ["linux"], identities.lifetime("1h"), by="test")
        regs.append(identities.register(pool, made.token, name, host="logs-host"))
    # Sent by name to runners no worker of the pool is, so only these two may claim them.
    mine, theirs = (h.submit(git_server, "true", "--runner", "logs-host-linux-*") for _ in "ab")
    own_key, their_key = log_stream_key("linux", mine), log_stream_key("linux", theirs)
    users = [_as_user(h.redis_url, g.redis_username, g.redis_password) for g in regs]
    apis = [
        httpx.Client(
            base_url=id_api + defaults.RUNNER_API_PREFIX,
            headers={"Authorization": f"Bearer {g.credential}"},
            timeout=30,
        )
        for g in regs
    ]
    me, other = users
    lost: list[str] = []
    try:
        # Before any claim: no stream of its capability is open to it.
        with pytest.raises(redis.exceptions.NoPermissionError):
            me.xadd(own_key, {"l": "early"})
        for api, job_id in zip(apis, (mine, theirs), strict=True):
            res = api.post(f"/jobs/{job_id}/claim", json={"lease_ttl": 60})
            assert res.status_code == 200, res.text
            assert res.json()["job"]["attempt"] == 1
        # Its claimed job's stream: write, read, expire, as the worker's LogWriter does.
        me.xadd(own_key, {"a": "1", "l": "my line"})
        me.expire(own_key, 600)
        ((_key, entries),) = me.xread({own_key: "0-0"}, count=10)
        assert [f[b"l"] for _id, f in entries] == [b"my line"]
        # The other job of the same capability, claimed by the other runner: refused,
        # both ways, and the same holds for the other runner and this job.
        forged = [
            lambda: me.xadd(their_key, {"a": "1", "l": "forged"}),
            lambda: me.xread({their_key: "0-0"}),
            lambda: me.xrange(their_key),
            lambda: me.delete(their_key),
            lambda: other.xread({own_key: "0-0"}),
            lambda: other.xadd(own_key, {"a": "1", "l": "forged"}),
        ]
        for i, call in enumerate(forged):
            with pytest.raises(redis.exceptions.NoPermissionError):
                call()
                pytest.fail(f"call {i} was allowed")
        other.xadd(their_key, {"a": "1", "l": "their line"})

        # The outcome ends the attempt and the grant with it.
        res = apis[0].post(
            f"/jobs/{mine}/attempts/1/outcome", json={"state": "succeeded", "exit_code": 0}
        )
        assert res.status_code == 200, res.text
        assert pool.get(mine).state == JobState.SUCCEEDED
        for call in (
            lambda: me.xadd(own_key, {"a": "1", "l": "after the end"}),
            lambda: me.xread({own_key: "0-0"}),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                call()
        # What it wrote while it held the job is there for `logs --follow` (the pool's user).
        assert [f[b"l"] for _id, f in pool.redis.xrange(own_key)] == [b"my line"]
        other.xadd(their_key, {"a": "1", "l": "still its own"})  # its grant is untouched
        res = apis[1].post(
            f"/jobs/{theirs}/attempts/1/outcome", json={"state": "succeeded", "exit_code": 0}
        )
        assert res.status_code == 200, res.text

        # A lost attempt loses its grant too: taken over by another runner once its lease
        # ran out, or closed and re-queued by the reaper.
        taken, reaped = (
            h.submit(git_server, "true", "--runner", "logs-host-linux-*") for _ in "ab"
        )
        lost += [taken, reaped]
        lost_keys = [log_stream_key("linux", j) for j in lost]
        for job_id, key in zip((taken, reaped), lost_keys, strict=True):
            res = apis[0].post(f"/jobs/{job_id}/claim", json={"lease_ttl": 1})
            assert res.status_code == 200 and res.json()["job"], res.text
            me.xadd(key, {"a": "1", "l": "line"})
        time.sleep(1.5)  # both leases (1 s) run out
        res = apis[1].post(f"/jobs/{taken}/claim", json={"lease_ttl": 60})
        assert res.json()["took_over"] == 1, res.text
        other.xadd(lost_keys[0], {"a": "2", "l": "the new attempt"})
        assert h.cli("beat", "--once").returncode == 0
        assert pool.get(reaped).state == JobState.QUEUED and pool.get(reaped).attempt == 1
        for key in lost_keys:
            with pytest.raises(redis.exceptions.NoPermissionError):
                me.xadd(key, {"a": "1", "l": "from the lost attempt"})
    finally:
        for api in apis:
            api.close()
        for g in regs:
            identities.revoke(pool, g.name, by="test")
        for job_id in lost:
            pool.cancel(job_id)
        pool.redis.delete(own_key, their_key, *[log_stream_key("linux", j) for j in lost])


def _runner(h: Harness, api: str, cred: Path, **extra: str) -> Harness:
    """The pool's harness as seen by a remote runner: its own credential file, the API."""
    overrides = {
        **h.overrides,
        "api_url": api,
        "runner_credential_file": str(cred),
        "runner_id": "h1-linux-1",
        **extra,
    }
    return dataclasses.replace(h, overrides=overrides, workers=[])


def _exit_line(worker_log: Path) -> str:
    text = worker_log.read_text()
    assert "Traceback" not in text, text
    return text


def test_join_run_restart_and_revoke_a_runner(
    id_pool: Harness, id_api: str, git_server: GitServer, tmp_path: Path, docker_client: Any
) -> None:
    h = id_pool
    res = h.cli("token", "create", "admin", "--scope", "admin")
    assert res.returncode == 0, res.stderr
    admin = dataclasses.replace(
        h, overrides={**h.overrides, "api_url": id_api, "api_token": res.stdout.strip()}
    )
    res = admin.cli("runner", "token", "create", "--capability", "linux", "--expires", "1h")
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip()
    assert token.startswith("cirt_") and "not shown again" in res.stderr

    cred = tmp_path / "runner" / "credential"
    first = _runner(h, id_api, cred, registration_token=token)
    w1 = first.start_worker("linux")
    try:
        assert w1.runner_id == "h1-linux-1"
        for path in (cred, cred.with_name("credential.redis")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert cred.read_text().strip().startswith("circ_")
        redis_user = json.loads(cred.with_name("credential.redis").read_text())
        assert redis_user["redis_username"] == "runner-h1-linux-1"
        job = h.submit(git_server, "echo hello from the runner")
        done = h.pool().wait(job, timeout=30)
        assert done.state == JobState.SUCCEEDED, w1.log.read_text()[-6000:]
        assert done.runner_id == "h1-linux-1"
        # Remote control still answers through its Redis user (replies are write-only).
        res = admin.cli("runner", "exec", "h1-linux-1", "--", "echo", "exec-ok")
        assert res.returncode == 0 and res.stdout.strip() == "exec-ok", res.stderr
    finally:
        w1.stop()

    # The token is used up: another runner cannot join with it (one line, exit != 0).
    again = _runner(h, id_api, tmp_path / "other" / "credential", registration_token=token)
    again.overrides["runner_id"] = "h2-linux-1"
    res = again.cli("worker", "--capability", "linux")
    assert res.returncode == 2, res.stderr
    assert "registration of runner 'h2-linux-1' refused" in res.stderr
    assert "used already" in res.stderr and "Traceback" not in res.stderr

    # A credential file open to others is refused, saying how to fix it.
    cred.chmod(0o644)
    res = _runner(h, id_api, cred).cli("worker", "--capability", "linux")
    assert res.returncode == 2 and f"chmod 600 {cred}" in res.stderr, res.stderr
    cred.chmod(0o600)

    # Restart without the registration token: the saved identity is enough.
    second = _runner(h, id_api, cred)
    w2 = second.start_worker("linux")
    job = h.submit(
        git_server,
        'echo attempt $CI_POOL_ATTEMPT; [ "$CI_POOL_ATTEMPT" = 1 ] && sleep 60; echo finished',
    )
    h.wait_state(job, JobState.RUNNING.value)
    assert h.pool().get(job).runner_id == "h1-linux-1"

    res = admin.cli("runner", "revoke", "h1-linux-1")
    assert res.returncode == 0, res.stderr
    assert "runner h1-linux-1 revoked by token:admin" in res.stdout
    # The revoked worker stops at its next Redis call, with one clear line.
    w2.proc.wait(timeout=30)
    assert w2.proc.returncode == defaults.EXIT_REVOKED
    text = _exit_line(w2.log)
    assert "the runner was revoked: taking no new job and exiting" in text
    # Nothing it started runs on: its job's container went with it.
    assert not docker_client.containers.list(
        all=True, filters={"label": f"{defaults.LABEL_RUNNER}=h1-linux-1"}
    )
    assert not [r for r in h.pool().runners("linux") if r.runner_id == "h1-linux-1"]
    with pytest.raises(redis.exceptions.AuthenticationError):
        _as_user(h.redis_url, redis_user["redis_username"], redis_user["redis_password"]).ping()

    # The reaper re-queues its job; a worker of the pool runs it to the end.
    other = h.start_worker("linux")
    assert other.runner_id != "h1-linux-1"
    deadline = time.monotonic() + 90
    while JobState(h.pool().get(job).state) is not JobState.SUCCEEDED:
        assert time.monotonic() < deadline, h.pool().get(job)
        assert h.cli("beat", "--once").returncode == 0
        time.sleep(0.5)
    finished = h.pool().get(job)
    assert finished.runner_id == other.runner_id and finished.attempt == 2

    listed = admin.cli("runner", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout) if r["name"] == "h1-linux-1"]
    assert row["revoked_by"] == "token:admin" and row["revoked_at"]
