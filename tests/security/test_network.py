"""Submit-time network access (issue 12, attacks 11-13 and 17), on the API under uvicorn
with the real store, broker, git daemon and a linux worker.

Whether the API connected anywhere is observed with an audit hook (``sys.addaudithook``)
on this process, where the API server runs: every ``socket.connect`` and every process it
starts (git) is recorded, so "refused before any connection" is checked, not assumed."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ci_pool.api.server import make_server, running
from ci_pool.embedded import free_port
from ci_pool.settings import Settings, load_settings
from tests.conftest import GitServer, Harness, Worker
from tests.integration.test_api import auth, make_token

pytestmark = pytest.mark.integration

#: What the audit hook saw while ``recording`` was on: ("connect", address) and
#: ("exec", argv) events of this process.
_SEEN: list[tuple[str, str]] = []
_RECORDING = threading.Event()


#: Addresses these tests name that must never be reached, whatever the code under test does:
#: the guard below stops the connection or the git process before it starts, so a regression
#: fails the test without sending a packet off this machine.
_FORBIDDEN = ("169.254", "fe80", "2852039166", "0.0.0.0", "::ffff:169")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _RECORDING.is_set():
        return
    if event == "socket.connect":
        address = str(args[1])
        _SEEN.append(("connect", address))
    elif event == "subprocess.Popen":
        address = " ".join(str(a) for a in (args[1] or [args[0]]))
        _SEEN.append(("exec", address))
    else:
        return
    if any(bad in address for bad in _FORBIDDEN):
        raise PermissionError(f"test guard: refusing to reach {address}")


sys.addaudithook(_audit)


@contextmanager
def recorded() -> Iterator[list[tuple[str, str]]]:
    """The connections made and processes started by this process inside the block."""
    _SEEN.clear()
    _RECORDING.set()
    try:
        yield _SEEN
    finally:
        _RECORDING.clear()


def settings_for(harness: Harness, **over: Any) -> Settings:
    return load_settings(
        harness.config,
        broker_url=harness.redis_url,
        home=harness.root / "home",
        **{**harness.overrides, **over},
    )


@contextmanager
def api(harness: Harness, **over: Any) -> Iterator[str]:
    """An API server of its own (uvicorn on loopback) over the shared pool's store."""
    port = free_port()
    with running(make_server(settings_for(harness, **over), "127.0.0.1", port, "warning")):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def api_process(harness: Harness, **over: Any) -> Iterator[str]:
    """``ci-pool api`` as a process of its own (its own threads and GIL, as deployed)."""
    port = free_port()
    env = harness.env()
    env.update({f"CI_POOL_{k.upper()}": str(v) for k, v in over.items()})
    proc = subprocess.Popen(
        [sys.executable, "-m", "ci_pool", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"ci-pool api exited with {proc.returncode}"
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Listener:
    """A loopback TCP server that accepts connections and never answers (a stalled git
    server); it counts connections, and the most it held at once."""

    def __init__(self, family: int = socket.AF_INET, host: str = "127.0.0.1"):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.open: list[socket.socket] = []
        self.most_at_once = 0
        self.greeting = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                self.open = [c for c in self.open if _alive(c)]
                continue
            self.accepted += 1
            if self.greeting:
                conn.sendall(self.greeting)
            self.open = [c for c in self.open if _alive(c)] + [conn]
            self.most_at_once = max(self.most_at_once, len(self.open))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for c in self.open:
            c.close()
        self.sock.close()


def _alive(conn: socket.socket) -> bool:
    """False once the peer closed (git killed on its timeout); what it sent is dropped."""
    conn.setblocking(False)
    try:
        while conn.recv(65536):
            pass
    except BlockingIOError:
        return True
    except OSError:
        pass
    conn.close()
    return False


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


def job_body(repo: str, run: str = "true", **extra: Any) -> dict[str, Any]:
    return {"repo": repo, "ref": "main", "capability": "linux", "steps": [{"run": run}], **extra}


def stored_jobs(harness: Harness, repo: str) -> int:
    return len(harness.pool().store.list_jobs(repo=repo, limit=1000))


def assert_422(res: httpx.Response, field: str, *words: str) -> str:
    assert res.status_code == 422, res.text
    error = res.json()["error"]
    assert error["code"] == "invalid_input" and error["field"] == field, error
    for word in words:
        assert word in error["message"], error["message"]
    assert "Traceback" not in res.text
    return str(error["message"])


# -- 11: which servers the API contacts at submit ---------------------------------------------


@pytest.mark.parametrize(
    "repo",
    [
        "http://169.254.169.254/latest/meta-data/app.git",
        "http://[::ffff:169.254.169.254]/app.git",
        "http://2852039166/app.git",  # 169.254.169.254 as one number
        "git://[fe80::1]:9418/app.git",
        "http://0.0.0.0:9418/app.git",
    ],
)
def test_metadata_and_link_local_are_refused_before_any_connection(
    harness: Harness, api_url: str, repo: str
) -> None:
    token = make_token(harness, "submit", "read")
    with recorded() as seen:
        res = httpx.post(f"{api_url}/v1/jobs", json=job_body(repo), headers=auth(token))
    message = assert_422(res, "repo", "refused")
    assert "link-local" in message or "unspecified" in message
    contacted = [s for s in seen if s[0] == "exec" or "169.254" in s[1] or "fe80" in s[1]]
    assert contacted == [], f"the API reached out before refusing: {contacted}"
    assert stored_jobs(harness, repo) == 0


def test_loopback_is_refused_unless_allowed_and_nothing_connects(
    harness: Harness, git_server: GitServer, listener: Listener
) -> None:
    token = make_token(harness, "submit", "read")
    repos = [
        f"git://127.0.0.1:{listener.port}/app.git",
        f"http://localhost:{listener.port}/app.git",
        f"git://[::1]:{listener.port}/app.git",
        f"http://127.1.2.3:{listener.port}/app.git",
        git_server.url(),  # a real git server, on loopback
    ]
    # The real git server's URL is used by other tests of the shared pool: count new rows.
    before = {repo: stored_jobs(harness, repo) for repo in repos}
    with api(harness, allow_loopback_git=False) as url, recorded() as seen:
        for repo in repos:
            res = httpx.post(f"{url}/v1/jobs", json=job_body(repo), headers=auth(token))
            assert_422(res, "repo", "loopback", "CI_POOL_ALLOW_LOOPBACK_GIT")
            assert stored_jobs(harness, repo) == before[repo]
    time.sleep(0.3)  # a window for a late connection attempt, which must not come
    assert listener.accepted == 0
    assert [s for s in seen if s[0] == "exec"] == [], "git was started for a refused server"


def test_only_git_hosts_are_contacted(
    harness: Harness, git_server: GitServer, listener: Listener
) -> None:
    token = make_token(harness, "submit", "read")
    daemon = git_server.url().split("/")[2]  # 127.0.0.1:PORT
    with api(harness, git_hosts=[daemon]) as url:
        ok = httpx.post(f"{url}/v1/jobs", json=job_body(git_server.url()), headers=auth(token))
        assert ok.status_code == 201, ok.text
        assert ok.json()["commit_sha"] == git_server.shas["app.git"]
        harness.pool().cancel(ok.json()["id"], by="test")
        other = f"git://127.0.0.1:{listener.port}/app.git"
        res = httpx.post(f"{url}/v1/jobs", json=job_body(other), headers=auth(token))
        assert_422(res, "repo", "not in the git_hosts setting")
    time.sleep(0.3)  # a window for a late connection attempt, which must not come
    assert listener.accepted == 0


def test_what_a_server_answers_is_never_echoed(
    harness: Harness, api_url: str, listener: Listener
) -> None:
    """A server that answers with its own text (a git ``ERR`` packet here; a banner, a
    metadata document) gets the submitter one fixed message, not the text."""
    leak = f"internal-banner-{uuid.uuid4().hex}"
    payload = f"ERR {leak}\n".encode()
    listener.greeting = f"{len(payload) + 4:04x}".encode() + payload
    token = make_token(harness, "submit", "read")
    repo = f"git://127.0.0.1:{listener.port}/app.git"
    res = httpx.post(f"{api_url}/v1/jobs", json=job_body(repo), headers=auth(token))
    message = assert_422(res, "repo")
    assert listener.accepted >= 1, "the server was never asked (the test proves nothing)"
    assert leak not in res.text
    assert message == (
        f"could not resolve ref 'main' at {repo}: the server refused or did not answer"
    )
    assert stored_jobs(harness, repo) == 0


def test_slow_servers_cannot_stall_the_api(harness: Harness, listener: Listener) -> None:
    """50 submits to a server that accepts and never answers: at most
    ``ref_lookup_concurrency`` look-ups at once, the rest answered 503 busy, and /healthz
    answers quickly all along."""
    token = make_token(harness, "submit", "read")
    repo = f"git://127.0.0.1:{listener.port}/app.git"
    results: list[httpx.Response] = []
    with api_process(harness, ref_lookup_timeout=4, ref_lookup_wait=1) as url:

        def submit() -> None:
            results.append(
                httpx.post(f"{url}/v1/jobs", json=job_body(repo), headers=auth(token), timeout=60)
            )

        threads = [threading.Thread(target=submit) for _ in range(50)]
        for t in threads:
            t.start()
        started = time.monotonic()
        # Probe while the look-ups wait on the server (all slots taken).
        while listener.accepted < 8 and time.monotonic() - started < 20:
            time.sleep(0.05)
        health = []
        with httpx.Client(timeout=10) as probe:
            while any(t.is_alive() for t in threads) and time.monotonic() - started < 60:
                t0 = time.monotonic()
                res = probe.get(f"{url}/healthz")
                health.append((time.monotonic() - t0, res.status_code))
                time.sleep(0.1)
        for t in threads:
            t.join(timeout=60)
    assert len(results) == 50
    assert len(health) >= 5 and all(code == 200 for _, code in health)
    slowest = max(took for took, _ in health)
    shown = ", ".join(f"{took:.2f}" for took, _ in health)
    assert slowest < 1.0, f"/healthz took {slowest:.2f}s while submits waited ({shown})"
    codes = sorted(r.status_code for r in results)
    busy = [r for r in results if r.status_code == 503]
    assert set(codes) <= {422, 503} and busy, codes
    assert all("busy" in r.json()["error"]["message"] for r in busy)
    assert all("retry" in r.json()["error"]["message"] for r in busy)
    assert 1 <= listener.most_at_once <= 8, listener.most_at_once
    assert stored_jobs(harness, repo) == 0


# -- 12: credentials in repository URLs -------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "http://ci:{secret}@127.0.0.1:{port}/app.git",
        "https://{secret}@git.example.com/org/app.git",
        "git://ci:{secret}@127.0.0.1:{port}/app.git",
        "ssh://git:{secret}@git.example.com/org/app.git",
    ],
)
def test_credentials_in_a_repo_url_are_refused_and_never_stored(
    harness: Harness, git_server: GitServer, api_url: str, template: str
) -> None:
    secret = f"pw{uuid.uuid4().hex}"
    port = git_server.url().split(":")[2].split("/")[0]
    repo = template.format(secret=secret, port=port)
    token = make_token(harness, "submit", "read")
    with recorded() as seen:
        res = httpx.post(f"{api_url}/v1/jobs", json=job_body(repo), headers=auth(token))
        pipe = httpx.post(
            f"{api_url}/v1/pipelines",
            json={"workflow": WORKFLOW, "repo": repo, "ref": "main"},
            headers=auth(token),
        )
    for answer in (res, pipe):
        assert_422(answer, "repo", "git_credentials")
        assert secret not in answer.text
    assert [s for s in seen if s[0] == "exec"] == []
    assert stored_jobs(harness, repo) == 0
    with harness.pool().store.session(write=False) as s:
        from sqlalchemy import text

        for table in ("jobs", "pipelines"):
            rows = s.execute(text(f"SELECT repo FROM {table} WHERE repo LIKE :p"), {"p": "%pw%"})
            assert all(secret not in r[0] for r in rows)


def test_an_ssh_user_name_is_still_fine(harness: Harness, listener: Listener) -> None:
    token = make_token(harness, "submit", "read")
    body = job_body(f"ssh://git@127.0.0.1:{listener.port}/org/app.git")
    with api(harness, allow_loopback_git=False) as url:
        res = httpx.post(f"{url}/v1/jobs", json=body, headers=auth(token))
    # Past URL validation: refused for its address, not for the user name.
    assert_422(res, "repo", "loopback")
    assert listener.accepted == 0


# -- 13: what a workflow renders of the repository ------------------------------------------

WORKFLOW = """\
on: push
jobs:
  show:
    runs-on: linux
    steps:
      - run: echo "repository=${{ github.repository }} event=${{ github.event_name }}"
"""


@pytest.mark.parametrize(
    "path", ["$(id).git", "org/$(id)/app.git", "org/app`id`.git", "org/a;id.git", "org/..%2f.git"]
)
def test_a_repo_path_with_shell_code_is_refused(
    harness: Harness, git_server: GitServer, api_url: str, path: str
) -> None:
    repo = git_server.url().rsplit("/", 1)[0] + "/" + path
    token = make_token(harness, "submit", "read")
    for route, body in (
        ("/v1/jobs", job_body(repo)),
        ("/v1/pipelines", {"workflow": WORKFLOW, "repo": repo, "ref": "main"}),
    ):
        res = httpx.post(f"{api_url}{route}", json=body, headers=auth(token))
        assert_422(res, "repo", "github.repository")
    assert stored_jobs(harness, repo) == 0


def test_github_repository_is_owner_name_not_the_url(
    harness: Harness, git_server: GitServer, linux_worker: Worker, api_url: str
) -> None:
    token = make_token(harness, "submit", "read")
    res = httpx.post(
        f"{api_url}/v1/pipelines",
        json={"workflow": WORKFLOW, "repo": git_server.url(), "ref": "main"},
        headers=auth(token),
    )
    assert res.status_code == 201, res.text
    job_id = res.json()["jobs"][0]["id"]
    job = harness.pool().wait(job_id, timeout=90)
    assert job.state == "succeeded", job.reason
    log = harness.pool().store.read_log(job_id)
    assert "repository=app event=push" in log, log
    assert f"repository={git_server.url()}" not in log


def test_run_event_is_validated_like_the_api(harness: Harness, git_server: GitServer) -> None:
    flow = harness.root / f"event-{uuid.uuid4().hex[:6]}.yml"
    flow.write_text(WORKFLOW)
    marker = harness.root / f"ran-{uuid.uuid4().hex[:6]}"
    res = harness.cli(
        "run", str(flow), "--repo", git_server.url(), "--ref", "main", "--detach",
        "--event", f"push$(touch {marker})",
    )  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert "event" in res.stderr and "a-z" in res.stderr
    assert "Traceback" not in res.stderr
    assert not marker.exists()


# -- 17: local exposure -------------------------------------------------------------------


def test_metrics_serve_off_loopback_is_refused(harness: Harness) -> None:
    port = free_port()
    res = harness.cli("metrics", "--serve", str(port), "--address", "0.0.0.0", timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "refusing to serve metrics on 0.0.0.0" in res.stderr
    assert "TLS" in res.stderr and "/metrics" in res.stderr
    assert "Traceback" not in res.stderr
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def open_store(env: dict[str, str]) -> None:
    """A CLI command that opens (and, the first time, creates) the store of ``env``'s home."""
    res = subprocess.run(
        [sys.executable, "-m", "ci_pool", "token", "list"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr


def test_store_file_is_private_in_a_private_home(harness: Harness, tmp_path: Path) -> None:
    env = harness.env()
    fresh = tmp_path / "fresh" / "home"
    (tmp_path / "fresh").mkdir(mode=0o755)
    env["CI_POOL_HOME"] = str(fresh)
    open_store(env)
    assert _mode(fresh) == 0o700
    assert _mode(fresh / "ci-pool.db") == 0o600

    # A home and store made by an earlier version (0755, 0644) are made private.
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)
    (old / "ci-pool.db").write_bytes((fresh / "ci-pool.db").read_bytes())
    os.chmod(old / "ci-pool.db", 0o644)
    env["CI_POOL_HOME"] = str(old)
    open_store(env)
    assert _mode(old) == 0o700
    assert _mode(old / "ci-pool.db") == 0o600
    for side in ("ci-pool.db-wal", "ci-pool.db-shm"):
        if (old / side).exists():
            assert _mode(old / side) == 0o600
