"""Runners on other hosts, made real with network namespaces: the pool (redis-server with
a password, the API over TLS, a git daemon) lives in namespace ``pool``; two runners
live in ``host-a`` and ``host-b``, linked to it by veth pairs on a bridge with test-only
addresses and no other network. A runner holds only the API's https URL, the CA file,
a registration token and its name (plus the broker's address, without a password): it
joins over TLS, reaches Redis as its own ACL user across the link, runs jobs with no
database URL, and one runner's revocation leaves the other working."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
import redis

from ci_pool import defaults
from ci_pool.core.specs import JobSpec, JobState, StepSpec
from ci_pool.embedded import free_port, make_repo, redis_server_binary
from ci_pool.store import tokens
from tests.conftest import FAST_TIMINGS, OPEN_POLICY, Harness, Worker, need
from tests.tlscerts import make_tls

pytestmark = pytest.mark.integration

CAPABILITY = "remote"
RUNNER_KEYS = {
    "CI_POOL_CONFIG",
    "CI_POOL_HOME",
    "CI_POOL_BROKER_URL",
    "CI_POOL_API_URL",
    "CI_POOL_API_CA_FILE",
    "CI_POOL_REGISTRATION_TOKEN",
    "CI_POOL_RUNNER_ID",
}


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")


def _free_subnet() -> str:
    """A test-only 10.231.<n> /24 that no route of this host uses (another run's link)."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    start = os.getpid() % 200
    for i in range(200):
        subnet = f"10.231.{20 + (start + i) % 200}"
        if f"{subnet}." not in routes:
            return subnet
    raise RuntimeError("every 10.231.<n>.0/24 test subnet is in use")


@dataclass(frozen=True)
class Net:
    """The namespaces of this run: ``pool`` and one per runner host, by role."""

    names: dict[str, str]
    root_link: str

    def exec(self, role: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.names[role], *cmd]


@contextmanager
def network(tag: str, subnet: str, hosts: dict[str, str]) -> Iterator[Net]:
    """Namespace ``pool`` with a bridge at ``<subnet>.1``, one namespace per ``hosts``
    entry (role -> address) on it, and a veth from this namespace at ``<subnet>.254``; all
    removed after, with any process still inside them."""
    names = {role: f"cip-{tag}-{role}" for role in ("pool", *hosts)}
    net = Net(names, f"cip{tag}r")
    made: list[str] = []
    try:
        for ns in names.values():
            _ip("netns", "add", ns)
            made.append(ns)
        pool = names["pool"]
        _ip("-n", pool, "link", "set", "lo", "up")
        _ip("-n", pool, "link", "add", "br0", "type", "bridge")
        _ip("-n", pool, "addr", "add", f"{subnet}.1/24", "dev", "br0")
        _ip("-n", pool, "link", "set", "br0", "up")
        _ip("link", "add", net.root_link, "type", "veth", "peer", "name", "test", "netns", pool)
        _ip("addr", "add", f"{subnet}.254/24", "dev", net.root_link)
        _ip("link", "set", net.root_link, "up")
        _ip("-n", pool, "link", "set", "test", "master", "br0", "up")
        for role, address in hosts.items():
            ns = names[role]
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip(
                "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", role, "netns", pool
            )
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", pool, "link", "set", role, "master", "br0", "up")
        yield net
    finally:
        for ns in made:
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
            ).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", net.root_link], capture_output=True, check=False)


def _service(
    cmd: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _until(
    what: str, check: Callable[[], object], proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        assert time.monotonic() < deadline, f"{what} did not start:\n{log.read_text()[-4000:]}"
        time.sleep(0.1)


def _answers(url: str, ca: Path) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(
                url, verify=ssl.create_default_context(cafile=str(ca)), timeout=2
            ).is_success
        except httpx.HTTPError:
            return False

    return check


def _redis_answers(client: redis.Redis) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    return check


def _runner_env(home: Path, config: Path, **values: str) -> dict[str, str]:
    """What a runner host is given: nothing of this process's CI_POOL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
    home.mkdir(parents=True)
    env.update(CI_POOL_CONFIG=str(config), CI_POOL_HOME=str(home))
    env.update({"CI_POOL_" + k.upper(): v for k, v in values.items()})
    return env


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


def test_runners_on_two_hosts_join_over_tls_run_jobs_and_one_is_revoked(tmp_path: Path) -> None:
    need(shutil.which("ip") is not None and os.geteuid() == 0, "ip netns needs root and iproute2")
    probe = subprocess.run(["ip", "netns", "add", f"cip-probe-{os.getpid()}"], capture_output=True)
    need(probe.returncode == 0, f"ip netns cannot run here: {probe.stderr.decode().strip()}")
    subprocess.run(["ip", "netns", "del", f"cip-probe-{os.getpid()}"], check=False)

    subnet = _free_subnet()
    pool_ip = f"{subnet}.1"
    hosts = {"host-a": f"{subnet}.2", "host-b": f"{subnet}.3"}
    root = tmp_path / "pool"
    root.mkdir()
    tls = make_tls(tmp_path / "tls", pool_ip)
    sha = make_repo(root / "git" / "app.git", {"README.md": "multi-host\n"})
    redis_port, git_port, api_port = free_port(), free_port(), free_port()
    password = secrets.token_hex(16)
    config = root / "ci-pool.toml"
    timings = "".join(
        f"{k} = {v}\n"
        for k, v in FAST_TIMINGS.items()
        if k not in ("allow_local_repos", "allow_loopback_git")
    )
    config.write_text(
        f'git_hosts = ["{pool_ip}:{git_port}"]\n{timings}'
        f'[capabilities.{CAPABILITY}]\nmode = "host"\n{OPEN_POLICY}'
    )
    pool_broker = f"redis://:{password}@{pool_ip}:{redis_port}/0"
    api_url = f"https://{pool_ip}:{api_port}"
    h = Harness(root, pool_broker, {})
    h.pool().store.init_schema()
    admin, _ = tokens.create_token(h.pool().store, "netns-admin", ["admin"])
    admin_cli = replace(
        h, overrides={**h.overrides, "api_url": api_url, "api_token": admin, "api_ca_file": tls.ca}
    )
    repo = f"git://{pool_ip}:{git_port}/app.git"

    with ExitStack() as stack:
        net = stack.enter_context(network(str(os.getpid() % 100000), subnet, hosts))
        # The pool side, every process of it in namespace "pool".
        redis_log = root / "redis.log"
        rds = _service(
            net.exec("pool", redis_server_binary(), "--port", str(redis_port), "--bind", pool_ip,
                     "--requirepass", password, "--dir", str(root), "--save", "",
                     "--appendonly", "no", "--loglevel", "warning"),
            redis_log,
        )  # fmt: skip
        stack.callback(_stop, rds)
        pool_redis = redis.Redis.from_url(pool_broker, socket_timeout=5)
        stack.callback(pool_redis.close)
        _until("redis-server", _redis_answers(pool_redis), rds, redis_log)
        git_log = root / "git-daemon.log"
        git = _service(
            net.exec("pool", "git", "daemon", "--reuseaddr", "--export-all",
                     f"--listen={pool_ip}", f"--port={git_port}",
                     f"--base-path={root / 'git'}", str(root / "git")),
            git_log,
        )  # fmt: skip
        stack.callback(_stop, git)
        api_env = {
            **h.env(),
            "CI_POOL_API_TLS_CERT": str(tls.cert),
            "CI_POOL_API_TLS_KEY": str(tls.key),
        }
        api_log = root / "api.log"
        api = _service(
            net.exec("pool", sys.executable, "-m", "ci_pool", "api", "--host", pool_ip,
                     "--port", str(api_port)),
            api_log,
            api_env,
        )  # fmt: skip
        stack.callback(_stop, api)
        _until("the API", _answers(f"{api_url}/healthz", tls.ca), api, api_log)

        # Two runner hosts, each given a registration token made through the API over TLS.
        runners: dict[str, Worker] = {}
        for role in hosts:
            res = admin_cli.cli(
                "runner", "token", "create", "--capability", CAPABILITY, "--expires", "10m"
            )
            assert res.returncode == 0, res.stderr
            name = f"{role}-{CAPABILITY}-1"
            home = tmp_path / role
            log = tmp_path / f"{role}.log"
            env = _runner_env(
                home, config,
                broker_url=f"redis://{pool_ip}:{redis_port}/0",
                api_url=api_url, api_ca_file=str(tls.ca),
                registration_token=res.stdout.strip(), runner_id=name,
            )  # fmt: skip
            proc = _service(
                net.exec(role, sys.executable, "-m", "ci_pool", "worker", "--capability",
                         CAPABILITY, "--loglevel", "INFO"),
                log,
                env,
            )  # fmt: skip
            worker = Worker(proc, CAPABILITY, log, name)
            runners[role] = worker
            stack.callback(worker.stop)
        pool = h.pool()
        for role, worker in runners.items():
            _until(
                role,
                lambda w=worker: any(r.runner_id == w.runner_id for r in pool.runners(CAPABILITY)),
                worker.proc,
                worker.log,
            )
            seen = _environ(worker.proc.pid)
            assert {k for k in seen if k.startswith("CI_POOL_")} == RUNNER_KEYS, sorted(seen)
            assert not any(password in v or "sqlite" in v or "postgres" in v for v in seen.values())
            assert not list(Path(seen["CI_POOL_HOME"]).glob("*.db"))  # no store of its own
            assert f"reaching the store through the API at {api_url}" in worker.log.read_text()

        # Each runner reaches Redis across its link, as its own ACL user.
        clients = pool_redis.client_list()
        for role, address in hosts.items():
            users = {c["user"] for c in clients if c["addr"].startswith(address + ":")}
            assert users == {f"runner-{role}-{CAPABILITY}-1"}, clients

        # Each runs a job, in its own namespace: the job's network is the runner host's.
        def run(target: str, step: str) -> str:
            spec = JobSpec(
                repo=repo,
                ref="main",
                capability=CAPABILITY,
                runner=target,
                steps=(StepSpec(run=step),),
            )
            return pool.submit(spec).id

        jobs = {
            role: run(w.runner_id, "readlink /proc/self/ns/net; cat README.md")
            for role, w in runners.items()
        }
        for role, job_id in jobs.items():
            done = pool.wait(job_id, timeout=60)
            assert done.state == JobState.SUCCEEDED, runners[role].log.read_text()[-4000:]
            assert done.runner_id == runners[role].runner_id and done.commit_sha == sha
            text = pool.store.read_log(job_id)
            runner_net = os.readlink(f"/proc/{runners[role].proc.pid}/ns/net")
            assert runner_net in text and "multi-host" in text
            assert runner_net != os.readlink("/proc/self/ns/net")

        # Revoke runner A through the API: it exits with one clear line, B works on.
        a, b = runners["host-a"], runners["host-b"]
        res = admin_cli.cli("runner", "revoke", a.runner_id)
        assert (
            res.returncode == 0
            and f"runner {a.runner_id} revoked by token:netns-admin" in res.stdout
        ), res.stderr
        a.proc.wait(timeout=30)
        assert a.proc.returncode == defaults.EXIT_REVOKED
        text = a.log.read_text()
        assert (
            "the runner was revoked: taking no new job and exiting" in text
            and "Traceback" not in text
        )
        credential = (tmp_path / "host-a" / "runner-credential").read_text().strip()
        refused = httpx.get(
            f"{api_url}{defaults.RUNNER_API_PREFIX}/self",
            headers={"Authorization": f"Bearer {credential}"},
            verify=ssl.create_default_context(cafile=str(tls.ca)),
            timeout=10,
        )
        assert refused.status_code == 401
        later = run(f"host-*-{CAPABILITY}-1", "echo still running")
        done = pool.wait(later, timeout=60)
        assert done.state == JobState.SUCCEEDED and done.runner_id == b.runner_id
        assert b.proc.poll() is None
