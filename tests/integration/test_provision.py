"""Provisioning against a real OpenSSH sshd on loopback (throwaway host and user keys) with a
stand-in ``incus`` on the remote PATH that records its calls: plan, apply, remove and rotate
end to end, the blockers, stale plans, and that no credential leaks anywhere. One test runs
a real worker in the stand-in container: it registers through a real API with the token
provisioning gave it, runs a job, is re-keyed by rotate and revoked by remove."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

import ci_pool
from ci_pool.core.specs import JobState
from ci_pool.embedded import RedisServer, free_port
from ci_pool.provision.ssh import SshError, SshSession, SshTarget
from ci_pool.provision.templates import TEMPLATES_DIR, render_dropin, render_unit
from ci_pool.service.pool import Pool
from ci_pool.settings import Settings, load_settings
from ci_pool.store import tokens
from tests.conftest import FAST_TIMINGS, GitServer, need, write_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"
REDIS_DB = 13
BROKER_PASSWORD = "broker-pw-Plaintext-4242"
STORE_PASSWORD = "store-pw-Plaintext-4242"
#: The operator's file; the store URL (from before runner identities) is never shipped.
CREDENTIALS = (
    "CI_POOL_API_URL=https://10.0.0.5:8000\n"
    f"CI_POOL_BROKER_URL=redis://:{BROKER_PASSWORD}@10.0.0.5:6380/0\n"
    f"CI_POOL_STORE_URL=postgresql+psycopg://ci:{STORE_PASSWORD}@10.0.0.5/ci_pool\n"
)
#: What a provisioned runner's credential file holds, and nothing else.
RUNNER_KEYS = [
    "CI_POOL_API_URL",
    "CI_POOL_BROKER_URL",
    "CI_POOL_RUNNER_ID",
    "CI_POOL_REGISTRATION_TOKEN",
]


def keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci-pool-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


@dataclass
class SshHost:
    """The sshd fixture: its directory (the remote's files), keys and stand-in state."""

    root: Path
    port: int
    host_key: str
    user_key: Path
    proc: subprocess.Popen[bytes]

    @property
    def state_dir(self) -> Path:
        return self.root / "standin"

    @property
    def incus(self) -> Path:
        return self.root / "bin" / "incus"

    def state(self) -> dict[str, Any]:
        path = self.state_dir / "state.json"
        return json.loads(path.read_text()) if path.exists() else {"instances": {}}

    def set_state(self, state: dict[str, Any]) -> None:
        (self.state_dir / "state.json").write_text(json.dumps(state))

    def calls(self) -> list[dict[str, Any]]:
        path = self.state_dir / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def verbs(self) -> list[str]:
        return [" ".join(c["argv"][:2]) for c in self.calls()]

    def file(self, name: str, path: str) -> Path:
        """The file pushed to container ``name`` at ``path``, as the stand-in kept it."""
        return self.state_dir / "rootfs" / name / path.lstrip("/")

    def runner_env(self, name: str) -> dict[str, str]:
        """The runner's credential file as KEY -> value (comments left out)."""
        text = self.file(name, "/etc/ci-pool/private/credentials.env").read_text()
        pairs = [line.split("=", 1) for line in text.splitlines() if not line.startswith("#")]
        return {k: v.strip("'") for k, v in pairs}


def registrations(store: Any) -> list[Any]:
    """Every registration token row, oldest first."""
    from sqlalchemy import select

    from ci_pool.store.identities import RegistrationToken

    with store.session(write=False) as s:
        rows = s.scalars(select(RegistrationToken).order_by(RegistrationToken.created_at))
        return list(rows)


@pytest.fixture(scope="module")
def ssh_host(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[SshHost]:
    need(os.access(SSHD, os.X_OK), "openssh-server is not installed (/usr/sbin/sshd)")
    need(shutil.which("ssh-keygen") is not None, "ssh-keygen is not installed")
    need(os.geteuid() == 0, "the sshd fixture logs in as root and must run as root")
    root = tmp_path_factory.mktemp("sshd")
    host_key = keygen(root / "host_key")
    keygen(root / "user_key")
    shutil.copy(root / "user_key.pub", root / "authorized_keys")
    (root / "bin").mkdir()
    (root / "standin").mkdir()
    standin = (Path(__file__).parent / "incus_standin.py").read_text()
    (root / "bin" / "incus").write_text(f"#!{sys.executable}\n{standin}")
    (root / "bin" / "incus").chmod(0o755)
    port = free_port()
    redis_url = redis_server.url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nAllowAgentForwarding no\n"
        f"PidFile {root / 'sshd.pid'}\n"
        f"SetEnv PATH={root / 'bin'}:/usr/bin:/bin CI_POOL_STANDIN_STATE={root / 'standin'} "
        f"CI_POOL_STANDIN_REDIS={redis_url} PYTHONPATH={ROOT}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    with (root / "sshd.log").open("wb") as log:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    from ci_pool.embedded import _wait_port

    _wait_port(port, proc, "sshd")
    yield SshHost(root, port, host_key, root / "user_key", proc)
    proc.terminate()
    proc.wait(timeout=10)


@dataclass
class Operator:
    """The operator's side: a ci-pool home, its credential file and the CLI."""

    home: Path
    ssh: SshHost
    redis_url: str
    outputs: list[str]
    config: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def known_hosts(self) -> Path:
        return self.home.parent / "known_hosts"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
        env["CI_POOL_HOME"] = str(self.home)
        env["CI_POOL_BROKER_URL"] = self.redis_url
        if self.config is not None:
            env["CI_POOL_CONFIG"] = str(self.config)
        env.update({"CI_POOL_" + k.upper(): str(v) for k, v in self.overrides.items()})
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env

    def settings(self) -> Settings:
        return load_settings(
            self.config, home=self.home, broker_url=self.redis_url, **self.overrides
        )

    def run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            list(cmd),
            env=self.env(),
            cwd=self.home.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.outputs += [res.stdout, res.stderr]
        return res

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "ci_pool", *args, timeout=timeout)

    def ssh_args(self) -> list[str]:
        return [
            "--host",
            "127.0.0.1",
            "--port",
            str(self.ssh.port),
            "--known-hosts",
            str(self.known_hosts),
            "--identity",
            str(self.ssh.user_key),
        ]

    def plan(
        self, count: int, *extra: str, capability: str = "linux"
    ) -> subprocess.CompletedProcess[str]:
        return self.cli(
            "provision",
            "plan",
            *self.ssh_args(),
            "--capability",
            capability,
            "--count",
            str(count),
            *extra,
        )

    def plan_id(self, res: subprocess.CompletedProcess[str]) -> str:
        m = re.match(r"plan ([0-9a-f]{16}):", res.stdout)
        assert m, res.stdout + res.stderr
        return m.group(1)

    def audit(self) -> list[dict[str, Any]]:
        path = self.home / "provision" / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def operator(tmp_path: Path, ssh_host: SshHost, redis_server: RedisServer) -> Iterator[Operator]:
    """A fresh operator home and an empty stand-in host for each test."""
    for f in ssh_host.state_dir.iterdir():
        if f.is_dir():
            shutil.rmtree(f)
        else:
            f.unlink()
    if not ssh_host.incus.exists():
        (ssh_host.root / "incus.off").rename(ssh_host.incus)
    url = redis_server.url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    home = tmp_path / "home"
    (home / "provision").mkdir(parents=True)
    creds = home / "provision" / "credentials.env"
    creds.write_text(CREDENTIALS)
    creds.chmod(0o600)
    op = Operator(home, ssh_host, url, [])
    op.known_hosts.write_text(f"[127.0.0.1]:{ssh_host.port} {ssh_host.host_key}\n")
    try:
        yield op
    finally:
        for inst in ssh_host.state().get("instances", {}).values():
            if inst.get("worker_pid"):
                try:
                    os.killpg(inst["worker_pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
    assert_no_secret_anywhere(op)


def assert_no_secret_anywhere(op: Operator) -> None:
    """No password from the credential file anywhere; no token plaintext in any output or
    record, nor on the remote side (the stand-in's calls and state) except in the files a
    runner holds by design: its credential file (a one-time registration token) and its
    own credential."""
    texts = {f"output {i}": t for i, t in enumerate(op.outputs)}
    for base in (op.home / "provision", op.ssh.root):
        for path in base.rglob("*"):
            if path.is_file() and path.name not in ("credentials.env", "user_key", "host_key"):
                texts[str(path)] = path.read_text(errors="replace")
    rootfs = str(op.ssh.state_dir / "rootfs")
    for where, text in texts.items():
        for secret in (BROKER_PASSWORD, STORE_PASSWORD):
            assert secret not in text, f"{secret} leaked into {where}"
        assert not re.search(r"cip_[A-Za-z0-9_-]{8,}", text), f"a token leaked into {where}"
        if where.startswith(rootfs):
            assert "STORE_URL" not in text and "postgresql" not in text, where
        else:
            assert not re.search(r"ci(rt|rc)_[A-Za-z0-9_-]{8,}", text), f"leaked into {where}"
    for runner in (op.ssh.state_dir / "rootfs").glob("*"):
        env = op.ssh.runner_env(runner.name)
        assert list(env) == RUNNER_KEYS, env
        assert "@" not in env["CI_POOL_BROKER_URL"]  # no user, no password


def test_plan_apply_remove_end_to_end(operator: Operator) -> None:
    op, host = operator, operator.ssh
    res = op.plan(2)
    assert res.returncode == 0, res.stderr
    plan_id = op.plan_id(res)
    assert "reconcile  profile:ci-pool-linux" in res.stdout
    assert "create     h127-0-0-1-linux-1" in res.stdout and "h127-0-0-1-linux-2" in res.stdout
    assert f"ci-pool provision apply --plan-id {plan_id} --confirm" in res.stdout
    assert host.verbs() == ["list --format", "profile list"]  # observing only
    assert (op.home / "provision" / "plans" / f"{plan_id}.json").is_file()

    refused = op.cli("provision", "apply", "--plan-id", plan_id)
    assert refused.returncode == 2 and "--confirm" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert host.verbs() == ["list --format", "profile list"]

    res = op.cli(
        "provision", "apply", "--plan-id", plan_id, "--confirm", "--heartbeat-timeout", "30"
    )
    assert res.returncode == 0, res.stderr
    assert "h127-0-0-1-linux-1: worker h127-0-0-1-linux-1 heartbeating" in res.stdout
    state = host.state()
    assert sorted(state["instances"]) == ["h127-0-0-1-linux-1", "h127-0-0-1-linux-2"]
    inst = state["instances"]["h127-0-0-1-linux-1"]
    assert inst["status"] == "Running" and inst["profiles"] == ["default", "ci-pool-linux"]
    assert inst["config"]["user.ci-pool.managed"] == "true"
    assert inst["files"]["/etc/ci-pool/private/credentials.env"]["mode"] == "0600"
    profile = state["profiles"]["ci-pool-linux"]
    assert profile["config"]["security.nesting"] == "true"
    assert "ci-pool-worker@linux.service" in profile["config"]["cloud-init.user-data"]

    calls = host.calls()
    applied = [
        c for c in calls[2:] if c["argv"][0] != "list" and c["argv"][:2] != ["profile", "list"]
    ]
    assert [" ".join(c["argv"][:2]) for c in applied] == [
        "profile create",
        "profile edit",
        *(
            [
                "launch images:debian/12/cloud",
                "exec h127-0-0-1-linux-1",
                "exec h127-0-0-1-linux-1",
                "file push",
                "exec h127-0-0-1-linux-1",
            ]
        ),
        *(
            [
                "launch images:debian/12/cloud",
                "exec h127-0-0-1-linux-2",
                "exec h127-0-0-1-linux-2",
                "file push",
                "exec h127-0-0-1-linux-2",
            ]
        ),
        # The readiness gate, once every worker heartbeats.
        "exec h127-0-0-1-linux-1",
        "exec h127-0-0-1-linux-2",
    ]
    doctor = applied[-1]["argv"]
    assert doctor[:4] == ["exec", "h127-0-0-1-linux-2", "--", "sh"]
    assert doctor[5].endswith(
        "/opt/ci-pool/bin/ci-pool doctor --json --skip-bench --capability linux"
    )
    assert ". /etc/ci-pool/worker.env; . /etc/ci-pool/private/credentials.env" in doctor[5]
    passed = "h127-0-0-1-linux-1: ci-pool doctor passed (2 checks; warnings: image linux)"
    assert passed in res.stdout
    with_stdin = [c for c in calls if c["stdin"]]
    assert [c["argv"][:2] for c in with_stdin] == [
        ["profile", "edit"],
        ["file", "push"],
        ["file", "push"],
    ]
    pushes = {c["stdin_sha256"] for c in with_stdin[1:]}
    assert len(pushes) == 2  # each runner its own token
    # What a runner is given: the API, the broker's address without the password, its
    # name and a one-time registration token; no store URL, no shared password.
    env = host.runner_env("h127-0-0-1-linux-1")
    assert env == {
        "CI_POOL_API_URL": "https://10.0.0.5:8000",
        "CI_POOL_BROKER_URL": "redis://10.0.0.5:6380/0",
        "CI_POOL_RUNNER_ID": "h127-0-0-1-linux-1",
        "CI_POOL_REGISTRATION_TOKEN": env["CI_POOL_REGISTRATION_TOKEN"],
    }
    assert env["CI_POOL_REGISTRATION_TOKEN"].startswith("cirt_")

    audit = op.audit()
    assert [(r["event"], r["state"]) for r in audit] == [
        ("plan", "planned"),
        ("apply", "completed"),
    ]
    assert audit[1]["evidence"] and all("command" in e for e in audit[1]["evidence"])
    assert [c["status"] for c in audit[1]["doctor"]["h127-0-0-1-linux-1"]] == ["ok", "warn"]
    assert audit[1]["registered"] == ["h127-0-0-1-linux-1", "h127-0-0-1-linux-2"]
    settings = op.settings()
    store = Pool(settings).store
    assert [t.name for t in tokens.list_tokens(store)] == []  # no API token any more
    regs = registrations(store)
    # One token per runner, bound to its name and capability, short-lived.
    assert [(r.name, r.capabilities) for r in regs] == [
        ("h127-0-0-1-linux-1", ["linux"]),
        ("h127-0-0-1-linux-2", ["linux"]),
    ]
    assert all(r.expires_at - r.created_at <= timedelta(minutes=16) for r in regs)
    assert regs[0].created_by == "provision apply (local:root)"

    again = op.cli("provision", "apply", "--plan-id", plan_id, "--confirm")
    assert again.returncode == 0 and "applied already" in again.stdout

    res = op.plan(2)
    assert res.returncode == 0 and "nothing to do" in res.stdout

    dry = op.cli("provision", "remove", "h127-0-0-1-linux-2")
    assert dry.returncode == 0 and "nothing has changed yet" in dry.stdout
    assert "h127-0-0-1-linux-2" in host.state()["instances"]
    runners = Pool(settings).runners("linux")
    assert {r.host for r in runners} == {"h127-0-0-1-linux-1", "h127-0-0-1-linux-2"}

    res = op.cli("provision", "remove", "h127-0-0-1-linux-2", "--confirm", "--json")
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout)
    assert record["state"] == "completed" and record["deleted"] is True
    assert record["revoked"] == []  # the stand-in's heartbeat never registered
    assert sorted(host.state()["instances"]) == ["h127-0-0-1-linux-1"]
    assert host.calls()[-1]["argv"] == ["delete", "h127-0-0-1-linux-2", "--force"]
    assert {r.host for r in Pool(settings).runners("linux")} == {"h127-0-0-1-linux-1"}
    assert [r["state"] for r in op.audit()][-1] == "completed"

    first_token = env["CI_POOL_REGISTRATION_TOKEN"]
    rotated = op.cli("provision", "rotate", "h127-0-0-1-linux-1", "--confirm", "--json")
    assert rotated.returncode == 0, rotated.stderr
    rec = json.loads(rotated.stdout)
    assert rec["registered"] == "h127-0-0-1-linux-1" and rec["revoked"] == []
    env = host.runner_env("h127-0-0-1-linux-1")
    assert env["CI_POOL_REGISTRATION_TOKEN"] != first_token
    # The saved identity goes, so the worker registers again with the new token.
    rm = [c["argv"] for c in host.calls() if c["argv"][3:5] == ["rm", "-f"]]
    assert rm == [
        [
            "exec",
            "h127-0-0-1-linux-1",
            "--",
            "rm",
            "-f",
            "/var/lib/ci-pool/runner-credential",
            "/var/lib/ci-pool/runner-credential.redis",
        ]
    ]
    assert [r.name for r in registrations(store)].count("h127-0-0-1-linux-1") == 2


def _whoami(api: str, credential: str) -> int:
    res = httpx.get(
        f"{api}/v1/runner/self", headers={"Authorization": f"Bearer {credential}"}, timeout=10
    )
    return res.status_code


def _join_with(op: Operator, env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    """A worker started with a runner's credential file but no saved identity."""
    worker_env = {**op.ssh.state()["real_worker"], **env, "CI_POOL_HOME": str(home)}
    full = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
    return subprocess.run(
        [sys.executable, "-m", "ci_pool", "worker", "--capability", "linux"],
        env={**full, **worker_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_provisioned_runner_registers_runs_a_job_rotates_and_is_revoked(
    operator: Operator, busybox_image: str, git_server: GitServer, tmp_path: Path
) -> None:
    from ci_pool.api.server import make_server, running
    from ci_pool.core.specs import JobSpec, StepSpec
    from ci_pool.embedded import free_port
    from ci_pool.store import identities

    op, host = operator, operator.ssh
    op.config = tmp_path / "ci-pool.toml"
    write_config(op.config, busybox_image)
    op.overrides = dict(FAST_TIMINGS)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    (op.home / "provision" / "credentials.env").write_text(
        f"CI_POOL_API_URL={api}\n"
        f"CI_POOL_BROKER_URL=redis://:{BROKER_PASSWORD}@127.0.0.1:"
        f"{op.redis_url.rsplit(':', 1)[1]}\n"
        f"CI_POOL_STORE_URL=postgresql+psycopg://ci:{STORE_PASSWORD}@127.0.0.1/ci_pool\n"
    )
    # What the runner's worker.env would hold: the capabilities and the pool's timings.
    host.set_state(
        {
            "instances": {},
            "profiles": {"default": {"description": "", "config": {}, "devices": {}}},
            "real_worker": {
                "CI_POOL_CONFIG": str(op.config),
                **{"CI_POOL_" + k.upper(): str(v) for k, v in op.overrides.items()},
            },
        }
    )
    name = "h127-0-0-1-linux-1"
    pool = Pool(op.settings())
    pool.store.init_schema()
    with running(make_server(op.settings(), "127.0.0.1", port, log_level="warning")):
        res = op.cli("provision", "apply", "--plan-id", op.plan_id(op.plan(1)), "--confirm")
        log = host.file(name, "/var/lib/worker.log")
        assert res.returncode == 0, (
            res.stdout + res.stderr + (log.read_text() if log.exists() else "(no worker log)")
        )
        assert f"{name}: registered through the API" in res.stdout
        # The readiness gate ran doctor as the runner: Redis as its own user, the API
        # with its credential, and no store check (it holds none).
        checks = {c["name"]: c for c in op.audit()[-1]["doctor"][name]}
        assert checks["runner identity"]["status"] == "ok", checks
        assert checks["broker"]["status"] == "ok", checks
        assert f"runner-{name}:***@" in checks["broker"]["detail"]
        assert "store" not in checks

        env = host.runner_env(name)
        assert env["CI_POOL_BROKER_URL"] == op.redis_url  # the password taken out
        shipped = host.file(name, "/etc/ci-pool/private/credentials.env")
        assert stat.S_IMODE(shipped.stat().st_mode) == 0o600
        pid = host.state()["instances"][name]["worker_pid"]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not [e for e in environ if e.startswith(b"CI_POOL_STORE_URL=")]
        assert not [e for e in environ if BROKER_PASSWORD.encode() in e]
        assert "reaching the store through the API" in log.read_text()
        # It joined with its token: its own credential, 0600 on its disk, and a Redis user.
        cred_file = host.file(name, "/var/lib/ci-pool/runner-credential")
        assert stat.S_IMODE(cred_file.stat().st_mode) == 0o600
        credential = cred_file.read_text().strip()
        assert credential.startswith("circ_") and _whoami(api, credential) == 200
        row = identities.get_runner(pool.store, name)
        assert row is not None and row.active and row.capabilities == ["linux"]

        spec = JobSpec(repo=git_server.url(), ref="main", capability="linux",
                       steps=(StepSpec(run="echo provisioned runner ran this"),))  # fmt: skip
        done = pool.wait(pool.submit(spec).id, timeout=90)
        assert done.state == JobState.SUCCEEDED, log.read_text()[-4000:]
        assert done.runner_id == name
        assert "provisioned runner ran this" in pool.store.read_log(done.id)

        # The used token is refused, with one line saying why.
        used = _join_with(op, env, tmp_path / "again")
        assert used.returncode == 2, used.stderr
        assert f"registration of runner {name!r} refused" in used.stderr
        assert "used already" in used.stderr and "Traceback" not in used.stderr

        # Rotation: it registers again; the old credential stops working.
        res = op.cli(
            "provision", "rotate", name, "--confirm", "--heartbeat-timeout", "90", timeout=150
        )
        assert res.returncode == 0, res.stdout + res.stderr + log.read_text()[-6000:]
        assert f"{name}: registered again with a new credential" in res.stdout
        assert _whoami(api, credential) == 401
        credential = cred_file.read_text().strip()
        assert _whoami(api, credential) == 200

        res = op.cli("provision", "remove", name, "--confirm", "--json")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["revoked"] == [name]
        assert _whoami(api, credential) == 401
        listed = op.cli("runner", "list", "--json")
        (row_json,) = [r for r in json.loads(listed.stdout) if r["name"] == name]
        assert row_json["revoked_by"] == "provision remove (local:root)"
        assert not pool.redis.execute_command("ACL", "GETUSER", f"runner-{name}")
        # Started again with its saved (revoked) identity, the worker exits 77 at once,
        # which its unit does not restart.
        kept = host.file(name, "/var/lib/ci-pool")
        saved = {k: v for k, v in env.items() if k != "CI_POOL_REGISTRATION_TOKEN"}
        revoked = _join_with(op, saved, kept)
        assert revoked.returncode == 77, revoked.stderr
        assert "Traceback" not in revoked.stderr
        # Its name is never used again: the next runner is the next name.
        again = op.plan(1)
        assert "create     h127-0-0-1-linux-2" in again.stdout, again.stdout + again.stderr
        assert "h127-0-0-1-linux-1" not in again.stdout

        # An expired (here: withdrawn) token is refused too.
        token, _ = identities.create_registration(
            pool.store, ["linux"], timedelta(hours=1), name="h127-0-0-1-linux-2"
        )
        identities.withdraw_registration(pool.store, token)
        other = {"CI_POOL_RUNNER_ID": "h127-0-0-1-linux-2", "CI_POOL_REGISTRATION_TOKEN": token}
        expired = _join_with(op, {**env, **other}, tmp_path / "expired")
        assert expired.returncode == 2, expired.stderr
        assert "unknown or expired" in expired.stderr and "Traceback" not in expired.stderr

        # A runner that registers but fails the readiness gate is revoked; the next plan
        # replaces it under the next name.
        host.set_state({**host.state(), "doctor_fail": True})
        res = op.cli("provision", "apply", "--plan-id", op.plan_id(op.plan(1)), "--confirm")
        assert res.returncode == 3, res.stdout + res.stderr
        assert "runner(s) h127-0-0-1-linux-2 had registered and are revoked" in res.stderr
        failed = identities.get_runner(pool.store, "h127-0-0-1-linux-2")
        assert failed is not None and failed.revoked_by == "provision apply failed (local:root)"
        replan = op.plan(1).stdout
        assert "remove     h127-0-0-1-linux-2" in replan, replan
        assert "create     h127-0-0-1-linux-3" in replan, replan


def _applied_calls(host: SshHost, since: int) -> list[str]:
    """What apply ran on the host after call ``since``, observing left out."""
    return [
        " ".join(c["argv"][:5] if c["argv"][0] == "exec" else c["argv"][:2])
        for c in host.calls()[since:]
        if c["argv"][0] != "list" and c["argv"][:2] != ["profile", "list"]
    ]


def test_a_new_version_upgrades_the_lane_in_order(operator: Operator) -> None:
    op, host = operator, operator.ssh
    first = op.cli("provision", "apply", "--plan-id", op.plan_id(op.plan(1)), "--confirm")
    assert first.returncode == 0, first.stderr
    config = host.state()["instances"]["h127-0-0-1-linux-1"]["config"]
    assert config["user.ci-pool.version"] == f"ci-pool=={ci_pool.__version__}"
    assert len(config["user.ci-pool.unit-sha256"]) == 64
    assert "nothing to do" in op.plan(1).stdout
    pool = Pool(op.settings())
    old, old_pid = pool.runners("linux")[0].runner_id, pool.runners("linux")[0].pid

    res = op.plan(1, "--package", "ci-pool==9.9")
    assert res.returncode == 0, res.stderr
    assert re.search(
        rf"upgrade +h127-0-0-1-linux-1 +ci-pool {re.escape(ci_pool.__version__)} -> 9\.9",
        res.stdout,
    ), res.stdout
    since = len(host.calls())
    res = op.cli(
        "provision",
        "apply",
        "--plan-id",
        op.plan_id(res),
        "--confirm",
        "--heartbeat-timeout",
        "30",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout)
    upgraded = record["upgraded"]["h127-0-0-1-linux-1"]
    assert upgraded["steps"] == ["drain", "update", "restart", "readiness"]
    assert upgraded["drained"] == [old] and upgraded["runner_id"] == old  # it keeps its name
    assert _applied_calls(host, since) == [
        "profile edit",  # the profile's user-data names the new package
        "file push",  # unit
        "file push",  # drop-in
        "file push",  # worker.env
        "exec h127-0-0-1-linux-1 -- /opt/ci-pool/bin/pip install",
        "exec h127-0-0-1-linux-1 -- systemctl daemon-reload",
        "exec h127-0-0-1-linux-1 -- systemctl restart",
        "exec h127-0-0-1-linux-1 -- sh -c",  # ci-pool doctor
        "config set",
    ]
    pushed = [c["argv"][-1] for c in host.calls()[since:] if c["argv"][:2] == ["file", "push"]]
    assert pushed == [
        "h127-0-0-1-linux-1/etc/systemd/system/ci-pool-worker@.service",
        "h127-0-0-1-linux-1/etc/systemd/system/ci-pool-worker@linux.service.d/lane.conf",
        "h127-0-0-1-linux-1/etc/ci-pool/worker.env",
    ]
    inst = host.state()["instances"]["h127-0-0-1-linux-1"]
    assert inst["package"] == "ci-pool==9.9"
    assert inst["config"]["user.ci-pool.version"] == "ci-pool==9.9"
    assert "apt" not in inst  # the profile itself (limits, packages) did not change
    live = {(r.runner_id, r.pid) for r in pool.runners("linux")}
    assert [name for name, _ in live] == [old]
    assert old_pid not in {pid for _, pid in live}  # the drained worker was replaced
    assert not pool.redis.exists(f"ci-pool:drain:{old}")
    # The runner keeps its identity: no token issued, its credential file left alone.
    assert record["runners"] == {} and record["registered"] == []
    assert "rm" not in " ".join(_applied_calls(host, since))
    again = op.plan(1, "--package", "ci-pool==9.9")
    assert "nothing to do" in again.stdout, again.stdout


def test_an_upgrade_waits_for_the_running_job_and_a_failed_readiness_stays_drained(
    operator: Operator,
) -> None:
    op, host = operator, operator.ssh
    first = op.cli("provision", "apply", "--plan-id", op.plan_id(op.plan(1)), "--confirm")
    assert first.returncode == 0, first.stderr
    pool = Pool(op.settings())
    old = pool.runners("linux")[0].runner_id
    job = pool.store.create_job(
        name="busy",
        capability="linux",
        queue="linux",
        repo="https://example.invalid/r.git",
        ref="main",
        steps=[{"run": "true", "name": "x"}],
        timeout_s=60,
        max_attempts=1,
    )
    assert pool.store.claim(job.id, old, 60) is not None
    plan = op.plan_id(op.plan(1, "--package", "ci-pool==9.9"))
    since = len(host.calls())
    res = op.cli("provision", "apply", "--plan-id", plan, "--confirm", "--drain-timeout", "1")
    assert res.returncode == 3
    assert f"h127-0-0-1-linux-1 still runs job(s) {job.id} after 1s; it stays drained" in res.stderr
    assert "file push" not in _applied_calls(host, since)  # nothing was changed on it
    assert pool.redis.exists(f"ci-pool:drain:{old}")
    pool.redis.delete(f"ci-pool:drain:{old}")
    claimed = pool.get(job.id)
    assert pool.store.finish(
        job.id, claimed.attempt, JobState.SUCCEEDED, runner_id=old, exit_code=0
    )

    op.ssh.set_state({**host.state(), "doctor_fail": True})
    res = op.plan(1, "--package", "ci-pool==9.9")
    res = op.cli(
        "provision", "apply", "--plan-id", op.plan_id(res), "--confirm", "--drain-timeout", "1"
    )
    assert res.returncode == 3, res.stdout + res.stderr
    assert "runner h127-0-0-1-linux-1 is not ready, ci-pool doctor failed: docker engine" in (
        res.stderr
    )
    assert "h127-0-0-1-linux-1 was upgraded but is not ready: its worker" in res.stderr
    assert "stays drained" in res.stderr and "Traceback" not in res.stderr
    # The restarted worker keeps its name (the container's) and stays drained.
    assert [r.runner_id for r in pool.runners("linux")] == [old]
    assert pool.redis.exists(f"ci-pool:drain:{old}")
    config = host.state()["instances"]["h127-0-0-1-linux-1"]["config"]
    assert config["user.ci-pool.version"] == f"ci-pool=={ci_pool.__version__}"  # not recorded
    assert op.audit()[-1]["state"] == "failed"
    assert "upgrade    h127-0-0-1-linux-1" in op.plan(1, "--package", "ci-pool==9.9").stdout


def test_scaling_down_plans_a_remove(operator: Operator) -> None:
    op = operator
    plan_id = op.plan_id(op.plan(2))
    assert op.cli("provision", "apply", "--plan-id", plan_id, "--confirm").returncode == 0
    res = op.plan(1)
    assert res.returncode == 0, res.stderr
    assert "remove     h127-0-0-1-linux-2" in res.stdout and "keep" in res.stdout
    res = op.cli("provision", "apply", "--plan-id", op.plan_id(res), "--confirm")
    assert res.returncode == 0, res.stderr
    assert "h127-0-0-1-linux-2: removed" in res.stdout
    assert sorted(op.ssh.state()["instances"]) == ["h127-0-0-1-linux-1"]


def test_unknown_host_key_is_refused_and_nothing_runs(operator: Operator, tmp_path: Path) -> None:
    op = operator
    other = keygen(tmp_path / "other_key")
    op.known_hosts.write_text(f"[127.0.0.1]:{op.ssh.port + 1} {other}\n")
    res = op.plan(1)
    assert res.returncode == 3
    assert "blocker unknown_host_key" in res.stdout and "not in" in res.stdout
    assert "Traceback" not in res.stderr and op.ssh.calls() == []

    op.known_hosts.write_text(f"[127.0.0.1]:{op.ssh.port} {other}\n")
    res = op.plan(1)
    assert res.returncode == 3 and "blocker host_key_mismatch" in res.stdout
    assert op.ssh.calls() == []
    refused = op.cli("provision", "apply", "--plan-id", op.plan_id(res), "--confirm")
    assert refused.returncode == 3 and "blocked" in refused.stderr
    assert op.ssh.calls() == []


def test_apply_refuses_a_stale_plan(operator: Operator) -> None:
    op = operator
    plan_id = op.plan_id(op.plan(1))
    state = op.ssh.state()
    state.setdefault("profiles", {"default": {"description": "", "config": {}, "devices": {}}})
    state["instances"]["h127-0-0-1-linux-1"] = {
        "status": "Running",
        "type": "container",
        "profiles": ["default"],
        "config": {"user.ci-pool.capability": "linux"},
        "files": {},
    }
    op.ssh.set_state(state)
    res = op.cli("provision", "apply", "--plan-id", plan_id, "--confirm")
    assert res.returncode == 3
    assert f"plan {plan_id} is stale" in res.stderr and "instance h127-0-0-1-linux-1" in res.stderr
    assert "launch" not in " ".join(op.ssh.verbs())
    assert op.audit()[-1]["state"] == "failed"
    adopt = op.plan(1)
    assert "adopt      h127-0-0-1-linux-1" in adopt.stdout


def test_name_clash_is_a_blocker(operator: Operator) -> None:
    op = operator
    op.ssh.set_state(
        {
            "instances": {
                "h127-0-0-1-linux-1": {
                    "status": "Running",
                    "type": "container",
                    "profiles": ["default"],
                    "config": {},
                }
            },
            "profiles": {},
        }
    )
    res = op.plan(2)
    assert res.returncode == 3
    assert "blocker name_clash" in res.stdout and "h127-0-0-1-linux-1" in res.stdout
    assert "error: plan" in res.stderr


def test_missing_incus_and_unknown_capability_are_blockers(operator: Operator) -> None:
    op = operator
    op.ssh.incus.rename(op.ssh.root / "incus.off")
    res = op.plan(1)
    assert res.returncode == 3 and "blocker incus_missing" in res.stdout
    (op.ssh.root / "incus.off").rename(op.ssh.incus)
    res = op.plan(1, capability="nope")
    assert res.returncode == 3 and "blocker capability_unknown" in res.stdout
    assert "linux" in res.stdout
    assert op.ssh.calls() == []


def test_bad_input_exits_2_with_one_line(operator: Operator) -> None:
    op = operator
    res = op.cli(
        "provision",
        "plan",
        "--host",
        "127.0.0.1",
        "--capability",
        "linux",
        "--count",
        "1",
        "--identity",
        str(op.home / "missing"),
        "--known-hosts",
        str(op.known_hosts),
    )
    assert res.returncode == 2 and "--identity" in res.stderr and "Traceback" not in res.stderr
    res = op.cli("provision", "apply", "--plan-id", "nothex", "--confirm")
    assert res.returncode == 2 and "--plan-id" in res.stderr
    res = op.cli("provision", "remove", "h127-0-0-1-linux-9", "--confirm")
    assert res.returncode == 2 and "h127-0-0-1-linux-9" in res.stderr


def test_heartbeat_timeout_fails_and_revokes_the_token(operator: Operator) -> None:
    op = operator
    plan_id = op.plan_id(op.plan(1))
    state = op.ssh.state()
    op.ssh.set_state({**state, "no_heartbeat": True})
    res = op.cli(
        "provision", "apply", "--plan-id", plan_id, "--confirm", "--heartbeat-timeout", "2"
    )
    assert res.returncode == 3
    assert "no heartbeat within 2s from h127-0-0-1-linux-1" in res.stderr
    record = op.audit()[-1]
    assert record["state"] == "failed" and record["evidence"]
    store = Pool(op.settings()).store
    # The token it was given is withdrawn: no one can register with it now.
    (reg,) = registrations(store)
    assert reg.used_by is None and reg.expires_at <= datetime.now(UTC)


def test_a_failing_doctor_fails_apply_with_its_checks(operator: Operator) -> None:
    op = operator
    plan_id = op.plan_id(op.plan(1))
    op.ssh.set_state({**op.ssh.state(), "doctor_fail": True})
    res = op.cli(
        "provision", "apply", "--plan-id", plan_id, "--confirm", "--heartbeat-timeout", "30"
    )
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "runner h127-0-0-1-linux-1 is not ready, ci-pool doctor failed: docker engine: " in (
        res.stderr
    )
    assert "(fix: start dockerd (systemctl start docker))" in res.stderr
    assert "broker" not in res.stderr.split("doctor failed:")[1]  # only the failing checks
    record = op.audit()[-1]
    assert record["event"] == "apply" and record["state"] == "failed"
    assert "docker engine" in record["error"]
    assert not any(r["state"] == "completed" for r in op.audit() if r["event"] == "apply")
    store = Pool(op.settings()).store
    (reg,) = registrations(store)
    assert reg.used_by is None and reg.expires_at <= datetime.now(UTC)


def test_remove_waits_for_the_running_job(operator: Operator) -> None:
    op = operator
    assert (
        op.cli("provision", "apply", "--plan-id", op.plan_id(op.plan(1)), "--confirm").returncode
        == 0
    )
    pool = Pool(op.settings())
    runner = pool.runners("linux")[0]
    job = pool.store.create_job(
        name="busy",
        capability="linux",
        queue="linux",
        repo="https://example.invalid/r.git",
        ref="main",
        steps=[{"run": "true", "name": "x"}],
        timeout_s=60,
        max_attempts=1,
    )
    assert pool.store.claim(job.id, runner.runner_id, 60) is not None
    res = op.cli("provision", "remove", "h127-0-0-1-linux-1", "--confirm", "--timeout", "1")
    assert res.returncode == 3 and f"still runs job(s) {job.id}" in res.stderr
    assert "h127-0-0-1-linux-1" in op.ssh.state()["instances"]
    assert pool.runners("linux")[0].runner_id == runner.runner_id
    assert pool.redis.exists(f"ci-pool:drain:{runner.runner_id}")


def test_ssh_session_pins_keys_times_out_and_passes_stdin(operator: Operator) -> None:
    op = operator
    target = SshTarget("127.0.0.1", op.ssh.port, "root", op.known_hosts, op.ssh.user_key)
    with SshSession(target) as session:
        assert session.host_key.startswith("ssh-ed25519 SHA256:")
        res = session.run(["sh", "-c", "wc -c"], stdin=b"12345")
        assert res.exit_code == 0 and res.stdout.strip() == "5"
        assert session.run(["printenv", "SSH_AUTH_SOCK"]).exit_code == 1  # no agent forwarded
        with pytest.raises(SshError, match=r"did not finish within 0\.5s"):
            session.run(["sleep", "5"], timeout=0.5)
    empty = op.known_hosts.with_name("empty_known_hosts")
    empty.write_text("")
    with pytest.raises(SshError) as info:
        SshSession(SshTarget("127.0.0.1", op.ssh.port, "root", empty, op.ssh.user_key)).open()
    assert info.value.code == "unknown_host_key"


def test_runner_add_script_is_a_dry_run_by_default(operator: Operator) -> None:
    op = operator
    res = op.run(
        "bash",
        str(ROOT / "runbooks" / "runner-add.sh"),
        *op.ssh_args(),
        "--capability",
        "linux",
        "--count",
        "1",
    )
    assert res.returncode == 0, res.stderr
    assert "create     h127-0-0-1-linux-1" in res.stdout
    assert "dry run" in res.stdout and "--confirm" in res.stdout
    assert op.ssh.state()["instances"] == {}
    assert op.ssh.verbs() == ["list --format", "profile list"]


def test_runbook_scripts_are_strict_and_never_background() -> None:
    for script in sorted((ROOT / "runbooks").glob("*.sh")):
        text = script.read_text()
        assert "set -euo pipefail" in text, script
        assert "nohup" not in text and not re.search(r"&\s*$", text, re.M), script
        res = subprocess.run(
            ["bash", "-n", str(script)], capture_output=True, text=True, check=False
        )
        assert res.returncode == 0, res.stderr


def test_rendered_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")
    settings = load_settings(None, home=tmp_path / "home")
    unit = render_unit(exec_path=str(Path(sys.executable).parent / "ci-pool"))
    (tmp_path / "ci-pool-worker@.service").write_text(unit)
    for cap in ("linux", "iso"):
        dropins = tmp_path / f"ci-pool-worker@{cap}.service.d"
        dropins.mkdir()
        (dropins / "lane.conf").write_text(render_dropin(settings.capabilities[cap]))
        res = subprocess.run(
            ["systemd-analyze", "verify", f"ci-pool-worker@{cap}.service"],
            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        assert res.stderr.strip() == "", res.stderr  # unknown keys are only warnings
    for option in (
        "Restart=always",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
    ):
        assert option in unit


def test_rendered_user_data_passes_cloud_init_schema(tmp_path: Path) -> None:
    # .ci/run installs it, so CI always checks the schema
    need(
        shutil.which("cloud-init") is not None,
        "cloud-init is not installed (apt-get install --no-install-recommends cloud-init)",
    )
    from ci_pool.provision.templates import render_user_data

    settings = load_settings(None, home=tmp_path / "home")
    for cap in ("linux", "iso"):
        path = tmp_path / f"user-data-{cap}.yaml"
        path.write_text(
            render_user_data(settings, settings.capabilities[cap], "ci-pool==0.1.0", TEMPLATES_DIR)
        )
        res = subprocess.run(
            ["cloud-init", "schema", "--config-file", str(path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Valid" in res.stdout + res.stderr
