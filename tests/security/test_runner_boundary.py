"""The runner boundary of the API (``/v1/runner``), attacked with real credentials against
a real uvicorn API: a runner touches only the job attempts it holds, claims only its
registered capabilities, is told apart from API tokens both ways, is cut off at once when
revoked (its worker stops taking jobs and exits), and cannot send unbounded bodies."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ci_pool import defaults
from ci_pool.embedded import RedisServer
from ci_pool.store import identities
from tests.apirunner import ApiPool, api_pool
from tests.conftest import GitServer
from tests.integration.test_api import auth, make_token

pytestmark = pytest.mark.integration

CAPABILITY = "boundary"
A, B = "host-a-boundary-1", "host-b-boundary-1"
ARTIFACT_MAX = 64 * 1024


@pytest.fixture(scope="module")
def pool(
    session_dir: Path, redis_server: RedisServer, busybox_image: str, git_server: GitServer
) -> Iterator[ApiPool]:
    with api_pool(
        session_dir / "runner-boundary",
        redis_server,
        busybox_image,
        git_server,
        CAPABILITY,
        artifact_max_bytes=ARTIFACT_MAX,
        lease_ttl=60,
    ) as p:
        p.register(A)
        p.register(B)
        yield p


def message(res: httpx.Response) -> str:
    return str(res.json()["error"]["message"])


def claim(client: httpx.Client, job_id: str, **extra: Any) -> httpx.Response:
    return client.post(f"/jobs/{job_id}/claim", json={"lease_ttl": 30, **extra})


def claimed(pool: ApiPool, git: GitServer, who: str) -> tuple[str, int]:
    """A fresh job of the pool's capability, claimed by runner ``who``."""
    job_id = pool.submit(git, "echo hi")
    with pool.client(pool.credentials[who]) as c:
        res = claim(c, job_id)
    assert res.status_code == 200, res.text
    return job_id, int(res.json()["job"]["attempt"])


def test_a_runner_cannot_touch_a_job_it_did_not_claim(pool: ApiPool, git_server: GitServer) -> None:
    store = pool.harness.pool().store
    job_id = pool.submit(git_server, "echo hi")
    with pool.client(pool.credentials[A]) as ca, pool.client(pool.credentials[B]) as cb:
        # A runner id in the body is never read: the claim is recorded under A's name.
        res = claim(ca, job_id, runner_id=B)
        assert res.status_code == 200, res.text
        assert res.json()["job"]["runner_id"] == A
        attempt = int(res.json()["job"]["attempt"])
        before = store.get_job(job_id)
        base = f"/jobs/{job_id}/attempts/{attempt}"
        body = b"forged artifact"
        attacks: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/heartbeat", {"json": {"lease_ttl": 30}}),
            ("POST", "/log", {"json": {"seq": 0, "data": "forged line\n"}}),
            (
                "POST",
                "/outcome",
                {"json": {"state": "succeeded", "log": {"seq": 0, "data": "forged\n"}}},
            ),
            ("PUT", "/outputs", {"json": {"outputs": {"x": "forged"}}}),
            ("POST", "/summaries", {"json": {"step": 1, "name": "x", "markdown": "forged"}}),
            (
                "POST",
                "/annotations",
                {"json": {"annotations": [{"level": "error", "message": "forged", "step": 1}]}},
            ),
            (
                "PUT",
                "/artifacts",
                {
                    "params": {
                        "path": "forged.txt",
                        "sha256": hashlib.sha256(body).hexdigest(),
                        "size": len(body),
                    },
                    "content": body,
                },
            ),
            ("GET", "/artifacts", {}),
            ("GET", "/cache", {"params": {"prefix": "v1/"}}),
            (
                "POST",
                "/artifact-claims",
                {"json": {"name": "dist", "expires_at": "2099-01-01T00:00:00+00:00"}},
            ),
            ("DELETE", "/artifact-claims", {"params": {"name": "dist"}}),
            ("POST", "/artifact-sets", {"json": {"expires_at": "2099-01-01T00:00:00+00:00"}}),
            ("GET", "/expired-artifacts", {"params": {"name": "dist"}}),
        ]
        for method, path, kw in attacks:
            res = cb.request(method, base + path, **kw)
            assert res.status_code == 403, (path, res.text)
            assert message(res) == f"job {job_id} attempt {attempt} is not claimed by runner {B}"
        # Nor by A at an attempt it does not hold.
        res = ca.post(f"/jobs/{job_id}/attempts/{attempt + 1}/log", json={"seq": 0, "data": "x"})
        assert res.status_code == 403
        # Nothing was written: no lease extended, no log, no outcome, nothing stored.
        after = store.get_job(job_id)
        assert (after.state, after.runner_id, after.attempt) == ("running", A, attempt)
        assert after.lease_until == before.lease_until
        assert after.outputs == {}
        assert store.read_log(job_id) == ""
        assert store.summaries(job_id) == [] and store.annotations(job_id) == []
        assert store.artifacts(job_id) == []
        # The holder itself goes through.
        res = ca.post(base + "/log", json={"seq": 0, "data": "real line\n"})
        assert res.status_code == 204, res.text
        # Its last log chunk goes with its outcome, in the same transaction.
        last = {"seq": 1, "data": "last line\n"}
        res = ca.post(base + "/outcome", json={"state": "succeeded", "exit_code": 0, "log": last})
        assert res.status_code == 200, res.text
    assert store.read_log(job_id) == "real line\nlast line\n"
    assert store.get_job(job_id).state == "succeeded"


def test_a_runner_cannot_claim_a_job_of_another_capability(
    pool: ApiPool, git_server: GitServer
) -> None:
    store = pool.harness.pool().store
    job_id = pool.submit(git_server, "echo hi", capability="android")
    with pool.client(pool.credentials[A]) as ca:
        res = claim(ca, job_id)
    assert res.status_code == 403
    assert message(res) == f"runner {A} serves {CAPABILITY}; job {job_id} needs capability android"
    job = store.get_job(job_id)
    assert (job.state, job.attempt, job.runner_id) == ("queued", 0, None)


def test_tokens_and_runner_credentials_are_never_interchangeable(
    pool: ApiPool, git_server: GitServer
) -> None:
    store = pool.harness.pool().store
    token = make_token(pool.harness, "admin")
    job_id = pool.submit(git_server, "echo hi")
    with httpx.Client(base_url=pool.api_url, timeout=30) as c:
        # An admin API token is refused on every runner route.
        res = c.get("/v1/runner/self", headers=auth(token))
        assert res.status_code == 401
        assert "never an API token" in message(res)
        res = c.post(f"/v1/runner/jobs/{job_id}/claim", headers=auth(token), json={"lease_ttl": 30})
        assert res.status_code == 401
        assert store.get_job(job_id).state == "queued"
        res = c.get("/v1/runner/self")
        assert res.status_code == 401
        # A runner credential is refused on the user routes.
        credential = pool.credentials[A]
        res = c.get(f"/v1/jobs/{job_id}", headers=auth(credential))
        assert res.status_code == 401
        res = c.post(f"/v1/jobs/{job_id}/cancel", headers=auth(credential))
        assert res.status_code == 401
        assert store.get_job(job_id).state == "queued"
        # Each is accepted where it belongs.
        assert c.get(f"/v1/jobs/{job_id}", headers=auth(token)).status_code == 200
        me = c.get("/v1/runner/self", headers=auth(credential))
        assert me.status_code == 200 and me.json()["name"] == A


def test_a_revoked_runner_can_neither_claim_nor_write_a_log_line(
    pool: ApiPool, git_server: GitServer
) -> None:
    store = pool.harness.pool().store
    name = "host-c-boundary-1"
    credential = pool.register(name)
    job_id, attempt = claimed(pool, git_server, name)
    waiting = pool.submit(git_server, "echo hi")
    identities.revoke_runner(store, name, by="token 'test-admin'")
    with pool.client(credential) as c:
        res = c.post(f"/jobs/{job_id}/attempts/{attempt}/log", json={"seq": 0, "data": "late\n"})
        assert res.status_code == 401
        assert "revoked or unknown" in message(res)
        res = c.post(f"/jobs/{job_id}/attempts/{attempt}/heartbeat", json={"lease_ttl": 30})
        assert res.status_code == 401
        res = claim(c, waiting)
        assert res.status_code == 401
    assert store.read_log(job_id) == ""
    job = store.get_job(waiting)
    assert (job.state, job.attempt) == ("queued", 0)


def test_a_revoked_runner_stops_taking_jobs_and_exits(
    pool: ApiPool, git_server: GitServer, tmp_path: Path, docker_client: Any
) -> None:
    store = pool.harness.pool().store
    name = "host-d-boundary-1"
    worker = pool.start_worker(tmp_path / "home", pool.register(name))
    assert worker.runner_id == name
    identities.revoke_runner(store, name, by="token 'test-admin'")
    job_id = pool.submit(git_server, "echo should-not-run")
    worker.proc.wait(timeout=60)
    log = worker.log.read_text(errors="replace")
    assert log.count("refused this runner's credential") >= 1
    assert log.count(f"runner {name}: the pool API refused this runner's credential") == 1
    assert "taking no new job and exiting" in log
    assert "Traceback" not in log
    job = store.get_job(job_id)
    assert (job.state, job.attempt, job.runner_id) == ("queued", 0, None)
    # Had it claimed a job before the revoke, that job's container went with it.
    assert not docker_client.containers.list(
        all=True, filters={"label": f"{defaults.LABEL_RUNNER}={name}"}
    )
    # The broker no longer lists it.
    deadline = time.monotonic() + 10
    while [r for r in pool.harness.pool().runners(CAPABILITY) if r.runner_id == name]:
        assert time.monotonic() < deadline, "the revoked runner stayed registered"
        time.sleep(0.1)


def test_oversized_and_malformed_bodies_are_refused(pool: ApiPool, git_server: GitServer) -> None:
    store = pool.harness.pool().store
    job_id, attempt = claimed(pool, git_server, A)
    base = f"/jobs/{job_id}/attempts/{attempt}"

    def upload(c: httpx.Client, path: str, body: bytes, **kw: Any) -> httpx.Response:
        params = {"path": path, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
        return c.put(base + "/artifacts", params={**params, **kw}, content=body)

    with pool.client(pool.credentials[A]) as c:
        big = "x" * (defaults.RUNNER_LOG_CHUNK_MAX + 1)
        res = c.post(base + "/log", json={"seq": 0, "data": big})
        assert res.status_code == 413 and "over the limit" in message(res)
        res = c.put(base + "/outputs", json={"outputs": {"o": "y" * defaults.RUNNER_OUTPUTS_MAX}})
        assert res.status_code == 413
        res = c.post(
            base + "/summaries",
            json={"step": 1, "name": "s", "markdown": "z" * (defaults.RUNNER_SUMMARY_MAX + 1)},
        )
        assert res.status_code == 413
        # A whole request body past the runner bound never reaches a route.
        res = c.post(base + "/log", content=b"{" + b" " * defaults.RUNNER_BODY_MAX + b"}")
        assert res.status_code == 413
        # Artifacts: the attempt's bound, the declared size, the sha256 and the path.
        res = upload(c, "big.bin", b"a" * (ARTIFACT_MAX + 1))
        assert res.status_code == 413 and "artifact_max_bytes" in message(res)
        res = c.put(
            base + "/artifacts",
            params={"path": "lie.bin", "sha256": "0" * 64, "size": 4},
            content=b"more than four bytes",
        )
        assert res.status_code == 413
        res = c.put(
            base + "/artifacts",
            params={"path": "sum.bin", "sha256": "0" * 64, "size": 5},
            content=b"12345",
        )
        assert res.status_code == 422 and "does not match" in message(res)
        for bad in ("../escape.txt", "/etc/passwd", "a/../../b", "a//b", "./a"):
            res = upload(c, bad, b"bad")
            assert res.status_code == 422, (bad, res.text)
            assert "is refused" in message(res)
        res = upload(c, "other/file.txt", b"named", name="bundle")
        assert res.status_code == 422
        # A cache name outside the job's repository is refused.
        res = c.get(base + "/cache", params={"prefix": "v1/"})
        assert res.status_code == 403 and "outside the cache" in message(res)
        # Within bounds it is stored and checked.
        res = upload(c, "ok/file.txt", b"fine")
        assert res.status_code == 201, res.text
        res = upload(c, "ok/file.txt", b"fine")
        assert res.status_code == 422 and "stored already" in message(res)
    assert store.read_log(job_id) == ""
    assert store.get_job(job_id).outputs == {}
    assert [a.path for a in store.artifacts(job_id)] == ["ok/file.txt"]
    root = pool.harness.settings().resolved_artifact_root
    assert (root / job_id / str(attempt) / "ok" / "file.txt").read_bytes() == b"fine"
    assert not list(root.rglob("escape.txt")) and not list(root.rglob("big.bin"))


def test_artifacts_download_only_within_the_same_run(pool: ApiPool, git_server: GitServer) -> None:
    store = pool.harness.pool().store
    first, attempt1 = claimed(pool, git_server, A)
    body = b"secret build output of another run"
    with pool.client(pool.credentials[A]) as c:
        res = c.put(
            f"/jobs/{first}/attempts/{attempt1}/artifacts",
            params={"path": "out/x.bin", "sha256": hashlib.sha256(body).hexdigest(),
                    "size": len(body)},
            content=body,
        )  # fmt: skip
        assert res.status_code == 201, res.text
        artifact_id = store.artifacts(first)[0].id
        got = c.get(f"/jobs/{first}/attempts/{attempt1}/artifact-files/{artifact_id}")
        assert got.status_code == 200 and got.content == body
        second, attempt2 = claimed(pool, git_server, A)
        res = c.get(f"/jobs/{second}/attempts/{attempt2}/artifact-files/{artifact_id}")
        assert res.status_code == 404
        assert body not in res.content
        res = c.delete(f"/jobs/{second}/attempts/{attempt2}/artifacts/{artifact_id}")
        assert res.status_code == 404
    assert [a.id for a in store.artifacts(first)] == [artifact_id]
