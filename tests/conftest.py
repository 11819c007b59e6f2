"""Fixtures that start real services: redis-server, git daemon, dockerd's images, Celery
workers. A missing service skips with a reason on a laptop and fails under CI=true."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ci_pool.embedded import GitDaemon, RedisServer, build_busybox_image, make_repo
from ci_pool.service.pool import Pool
from ci_pool.settings import Settings, load_settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The test git servers (git daemon, git http-backend) listen on loopback, which the pool
# refuses unless told otherwise; tests that check the refusal set it false themselves.
os.environ.setdefault("CI_POOL_ALLOW_LOOPBACK_GIT", "true")
TEST_IMAGE = "ci-pool-test/busybox:latest"
#: A throwaway secret made for the tests; '/' and '+' give it distinct URL-encoded forms.
SECRET_VALUE = "s3cret/Token+for-tests"
LABEL_FILTER = "ci-pool.job"


#: Marks every process this test run starts (children inherit it), so the check at the
#: run's end finds exactly this run's leftovers among other runs on the host.
SESSION_MARK = "CIPOOL_TEST_SESSION"
os.environ[SESSION_MARK] = f"{os.getpid()}-{time.time_ns()}"


def need(ok: bool, reason: str) -> None:
    """Skip when a real service is missing; under CI a missing service is a failure."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required service missing under CI: {reason}")
    pytest.skip(reason)


def _session_processes() -> list[str]:
    """Processes (but this one) that carry this test run's mark: pid and command line."""
    mark = f"{SESSION_MARK}={os.environ[SESSION_MARK]}".encode() + b"\0"
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        if proc.name == str(os.getpid()):
            continue
        try:
            if mark in (proc / "environ").read_bytes():
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if cmd:  # a zombie has none: it is gone, its parent just has not reaped it
                    found.append(f"pid {proc.name}: {cmd.strip()}")
        except OSError:
            continue
    return found


def _session_containers(client: Any, before: set[str], roots: tuple[str, ...]) -> list[str]:
    """ci-pool containers made since the test run started that mount one of its dirs."""
    found = []
    # the summaries of one list call: no inspect of containers that are going away
    for c in client.api.containers(all=True, filters={"label": LABEL_FILTER}):
        sources = [m.get("Source", "") for m in c.get("Mounts") or []]
        if c["Id"] not in before and any(s.startswith(roots) for s in sources):
            job = (c.get("Labels") or {}).get(LABEL_FILTER)
            found.append(f"container {c['Id'][:12]} job {job} ({c.get('Status')})")
    return found


def _temp_leftovers(tmp: Path) -> list[str]:
    """ci-pool's temp dirs left in the test run's TMPDIR (a worker killed on purpose may
    leave multiprocessing's ``pymp-*``: not ours to judge)."""
    return [f"temp dir {p}" for p in sorted(tmp.glob("ci-pool*"))]


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under CI=true the run fails if it leaves a ci-pool container, process
    (worker, beat, API, redis-server...) or temp directory behind.

    Set up first, so torn down last: every fixture has stopped its services by then. The
    run's temp files go to a directory of their own, so only they are looked at."""
    base = tmp_path_factory.getbasetemp()
    tmp = base / "tmp"
    tmp.mkdir()
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = None  # tempfile reads TMPDIR again
    client: Any = None
    before: set[str] = set()
    try:
        import docker

        client = docker.from_env(timeout=30)
        before = {c["Id"] for c in client.api.containers(all=True, filters={"label": LABEL_FILTER})}
    except Exception:
        client = None
    yield
    if not IN_CI:
        return
    roots = (str(base), str(base.resolve()))
    deadline = time.monotonic() + 30  # what was just told to stop may take a moment
    while True:
        left = _session_processes() + _temp_leftovers(tmp)
        if client is not None:
            left += _session_containers(client, before, roots)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if left:
        pytest.fail("the test session left behind:\n  " + "\n  ".join(left), pytrace=False)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ci-pool")


@pytest.fixture(scope="session")
def redis_server(session_dir: Path) -> Iterator[RedisServer]:
    try:
        server = RedisServer.start(session_dir / "redis")
    except Exception as exc:
        need(False, f"cannot start redis-server: {exc}")
        raise
    yield server
    server.stop()


@pytest.fixture(scope="session")
def docker_client() -> Any:
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        need(False, f"no Docker engine answers: {exc}")
        raise
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client: Any, session_dir: Path) -> str:
    """A tiny image built FROM scratch with the host's static busybox (no pulls here)."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    need(os.path.exists(busybox), "busybox-static is not installed")
    build_busybox_image(docker_client, TEST_IMAGE, busybox)
    return TEST_IMAGE


@dataclass
class GitServer:
    daemon: GitDaemon
    base: Path
    shas: dict[str, str] = field(default_factory=dict)

    def url(self, name: str = "app.git") -> str:
        return self.daemon.url(name)


APP_FILES = {
    "README.md": "demo app\n",
    "build.sh": '#!/bin/sh\necho "building $CI_POOL_JOB_ID at $CI_POOL_COMMIT_SHA"\ncat VERSION\n',
    "VERSION": "1.2.3\n",
}


@pytest.fixture(scope="session")
def git_server(session_dir: Path) -> Iterator[GitServer]:
    need(shutil.which("git") is not None, "git is not installed")
    base = session_dir / "git"
    base.mkdir()
    sha = make_repo(base / "app.git", APP_FILES)
    daemon = GitDaemon.start(base)
    yield GitServer(daemon, base, {"app.git": sha})
    daemon.stop()


def submit_with(cli: Any, git: GitServer, run: str, *args: str, capability: str = "linux") -> str:
    """``ci-pool submit`` of one step at main through ``cli``; returns the job id."""
    res = cli("submit", "--repo", git.url(), "--ref", "main", "--capability", capability,
              "--run", run, *args)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return str(res.stdout.strip())


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    capability: str
    log: Path
    runner_id: str = ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the worker's whole process group (main process and pool children)."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def wait_log(self, text: str, count: int = 1, timeout: float = 60) -> None:
        """Wait until the worker's log holds ``text`` at least ``count`` times."""
        deadline = time.monotonic() + timeout
        while self.log.read_text(errors="replace").count(text) < count:
            assert time.monotonic() < deadline, f"worker log never showed {text!r} x{count}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass


@dataclass
class Harness:
    """One isolated pool: its own store, Redis db, config, and worker processes."""

    root: Path
    redis_url: str
    overrides: dict[str, Any]
    workers: list[Worker] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "ci-pool.toml"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
        env["CI_POOL_CONFIG"] = str(self.config)
        env["CI_POOL_BROKER_URL"] = self.redis_url
        env["CI_POOL_HOME"] = str(self.root / "home")
        for key, value in self.overrides.items():
            env["CI_POOL_" + key.upper()] = str(value)
        return env

    def settings(self) -> Settings:
        return load_settings(
            self.config, broker_url=self.redis_url, home=self.root / "home", **self.overrides
        )

    def pool(self) -> Pool:
        return Pool(self.settings())

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ci_pool", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def submit(self, git: GitServer, run: str, *args: str, capability: str = "linux") -> str:
        """``ci-pool submit`` of one step at main; returns the job id."""
        return submit_with(self.cli, git, run, *args, capability=capability)

    def wait_state(self, job_id: str, state: str, timeout: float = 60) -> None:
        pool = self.pool()
        deadline = time.monotonic() + timeout
        while pool.get(job_id).state != state:
            assert time.monotonic() < deadline, f"{job_id} never became {state}"
            time.sleep(0.05)

    def start_worker(self, capability: str, concurrency: int = 1) -> Worker:
        return self.start_worker_args(capability, "--concurrency", str(concurrency))

    def start_worker_args(self, capability: str, *args: str) -> Worker:
        log = self.root / f"worker-{capability}-{len(self.workers)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ci_pool",
                    "worker",
                    "--capability",
                    capability,
                    "--loglevel",
                    "INFO",
                    *args,
                ],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        worker = Worker(proc, capability, log)
        self.workers.append(worker)
        pool = self.pool()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}:\n{log.read_text()}")
            mine = [r for r in pool.runners(capability) if r.pid == proc.pid]
            if mine:
                worker.runner_id = mine[0].runner_id
                return worker
            time.sleep(0.1)
        raise RuntimeError(f"worker did not register within 60s:\n{log.read_text()}")

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.remove_orphans()

    def remove_orphans(self) -> None:
        """Remove the containers and overlay workspaces of this pool's jobs whose runner
        was killed on purpose (no runner of this pool is left to sweep them)."""
        import docker

        from ci_pool import overlay

        overlay.unmount_under(self.root)

        try:
            client = docker.from_env(timeout=30)
        except Exception:  # no engine: nothing was started in it
            return
        try:
            for c in client.containers.list(all=True, filters={"label": LABEL_FILTER}):
                if any(
                    str(m.get("Source", "")).startswith(f"{self.root}/")
                    for m in c.attrs.get("Mounts") or []
                ):
                    c.remove(force=True, v=True)
        except Exception:
            pass
        finally:
            client.close()


#: iso and deploy build no repository by default; the test pools let them build any.
OPEN_POLICY = 'repos = ["**"]\nrefs = ["refs/**"]\nrequire_signature = false\n'


def write_config(path: Path, image: str, extra: str = "", linux: str = "") -> None:
    path.write_text(
        f"[capabilities.iso]\n{OPEN_POLICY}\n"
        f'[capabilities.linux]\nimage = "{image}"\n{linux}\n'
        f'[capabilities.android]\nimage = "{image}"\nmemory = "256m"\n\n'
        f'[capabilities.flutter-web]\nimage = "{image}"\n\n'
        f'[capabilities.deploy]\nimage = "{image}"\nnetwork = "none"\n{OPEN_POLICY}' + extra
    )


FAST_TIMINGS = {
    "heartbeat_interval": 0.5,
    "lease_ttl": 3,
    "runner_ttl": 5,
    "stop_grace": 2,
    "retry_backoff": 0.2,
    "allow_local_repos": "false",
    "allow_loopback_git": "true",
    # Every job's same-commit workspace is an overlay, however small the test repository.
    "tree_overlay_min_bytes": 0,
}


@pytest.fixture(scope="session")
def harness(
    session_dir: Path, redis_server: RedisServer, busybox_image: str, git_server: GitServer
) -> Iterator[Harness]:
    """The shared pool for integration tests (Redis db 0)."""
    root = session_dir / "pool"
    root.mkdir()
    # Repository actions (uses: owner/repo@ref) come from the test git server.
    actions_url = git_server.url("").rstrip("/")
    h = Harness(root, redis_server.url, {**FAST_TIMINGS, "actions_url": actions_url})
    (root / "api-token").write_text(SECRET_VALUE + "\n")
    (root / "deploy-key").write_text("deploy-only-secret-value\n")
    write_config(
        h.config,
        busybox_image,
        linux=f'secrets = {{ API_TOKEN = "file:{root / "api-token"}" }}\n',
        extra=f'secrets = {{ DEPLOY_KEY = "file:{root / "deploy-key"}" }}\n',
    )
    yield h
    h.stop()


@pytest.fixture(scope="session")
def linux_worker(harness: Harness) -> Worker:
    return harness.start_worker("linux", concurrency=2)


@pytest.fixture(scope="session")
def android_worker(harness: Harness) -> Worker:
    return harness.start_worker("android", concurrency=1)


def containers_of(docker_client: Any, job_id: str) -> list[Any]:
    return list(
        docker_client.containers.list(all=True, filters={"label": f"{LABEL_FILTER}={job_id}"})
    )


def containers_left(docker_client: Any, job_id: str, timeout: float = 15) -> list[Any]:
    """The job's containers once they are gone, or those still there after ``timeout`` s:
    a job's container is removed in the background after its outcome is recorded."""
    deadline = time.monotonic() + timeout
    while (found := containers_of(docker_client, job_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def workspaces_left(root: Path, job_id: str, timeout: float = 15) -> list[Path]:
    """The job's attempt directories under ``root`` once gone, or those left after
    ``timeout`` s (removed in the background, like its container)."""
    deadline = time.monotonic() + timeout
    while (found := list(root.glob(f"{job_id}-*"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def isolated_harness(
    root: Path, redis_server: RedisServer, image: str, db: int, **overrides: Any
) -> Harness:
    """A pool on its own Redis db and store, so broker tricks cannot touch other tests."""
    root.mkdir()
    h = Harness(root, redis_server.url.rsplit("/", 1)[0] + f"/{db}", {**FAST_TIMINGS, **overrides})
    write_config(h.config, image)
    return h


@pytest.fixture(scope="session")
def postgres_url(session_dir: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port (Debian's postgresql)."""
    import glob

    from ci_pool.embedded import free_port

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    need(bool(bins) and shutil.which("runuser") is not None, "PostgreSQL server not installed")
    bindir = Path(bins[-1]).parent
    # Outside pytest's tmp dirs, which are private to root: the server runs as postgres.
    top = Path(tempfile.mkdtemp(prefix="ci-pool-pg-", dir="/tmp"))
    top.chmod(0o755)
    data = top / "data"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    port = free_port()

    def as_postgres(*cmd: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120
        )

    as_postgres(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "ci", "--no-sync")
    as_postgres(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-w",
        "-l",
        str(data / "log"),
        "-o",
        f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c fsync=off",
        "start",
    )
    try:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={port} user=ci dbname=postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE ci_pool")
        yield f"postgresql+psycopg://ci@127.0.0.1:{port}/ci_pool"
    finally:
        as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="session")
def api_url(harness: Harness) -> Iterator[str]:
    """A real API server (uvicorn on loopback) over the shared pool."""
    from ci_pool.api.server import make_server, running
    from ci_pool.embedded import free_port

    port = free_port()
    with running(make_server(harness.settings(), "127.0.0.1", port, log_level="warning")):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def podman_socket() -> Iterator[str]:
    """A rootful ``podman system service`` on a socket of its own, with the test image
    (busybox FROM scratch) built through its API; stopped, and everything it made
    removed, at the end."""
    from tests.podman_service import PodmanService

    need(shutil.which("podman") is not None, "podman is not installed")
    try:
        service = PodmanService.start()
    except RuntimeError as exc:
        need(False, str(exc))
        raise
    try:
        client = service.client()
        try:
            build_busybox_image(client, TEST_IMAGE, shutil.which("busybox") or "/bin/busybox")
        finally:
            client.close()
        yield service.url
    finally:
        service.stop()
