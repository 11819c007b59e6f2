"""A stand-in ``incus`` for the provisioning tests, installed on the sshd fixture's PATH.

It keeps instances and profiles in ``$CI_POOL_STANDIN_STATE/state.json`` so ``incus list``
reflects launches and deletes, and appends every call to ``calls.jsonl``: argv, whether
stdin was read, its size and sha256, never its content. Files pushed into a container
are kept under ``rootfs/<name>/`` (the test asserts on what a runner was given). Starting a
worker (``systemctl restart ci-pool-worker@CAP.service`` once a credential file was pushed,
or ``incus start``) heartbeats a runner into the Redis at ``$CI_POOL_STANDIN_REDIS``, as
the real worker would; with ``real_worker`` in the state (the settings a runner's
worker.env would give) it starts a real ``ci-pool worker`` instead, with that environment
and the pushed credential file, its home under ``rootfs/<name>/var/lib/ci-pool``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

STATE_DIR = Path(os.environ["CI_POOL_STANDIN_STATE"])
STATE = STATE_DIR / "state.json"
CALLS = STATE_DIR / "calls.jsonl"
CREDENTIALS = "/etc/ci-pool/private/credentials.env"


def rootfs(name: str, path: str = "/") -> Path:
    """Where the container's file ``path`` is kept."""
    return STATE_DIR / "rootfs" / name / path.lstrip("/")


def load() -> dict[str, Any]:
    if STATE.exists():
        data: dict[str, Any] = json.loads(STATE.read_text())
        return data
    return {
        "instances": {},
        "profiles": {"default": {"description": "", "config": {}, "devices": {}}},
    }


def save(state: dict[str, Any]) -> None:
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(STATE)


def record(argv: list[str], data: bytes | None) -> None:
    entry = {
        "argv": argv,
        "stdin": data is not None,
        "stdin_bytes": len(data) if data is not None else 0,
        "stdin_sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
    }
    with CALLS.open("a") as fh:
        fh.write(json.dumps(entry) + "\n")


def fail(message: str, code: int = 1) -> None:
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(code)


def heartbeat(state: dict[str, Any], name: str) -> None:
    inst = state["instances"][name]
    cap = inst["config"].get("user.ci-pool.capability", "")
    if state.get("no_heartbeat") or not inst.get("files", {}).get(
        "/etc/ci-pool/private/credentials.env"
    ):
        return
    import redis

    from ci_pool.broker.runners import RunnerInfo, RunnerRegistry

    client = redis.Redis.from_url(os.environ["CI_POOL_STANDIN_REDIS"])
    info = RunnerInfo(
        runner_id=name,  # the unit names the runner after its container (--name %H)
        capability=cap,
        queue=cap,
        host=name,
        pid=os.getpid(),
        concurrency=1,
        version="standin",
        started_at=time.time(),
    )
    RunnerRegistry(client, ttl=300).heartbeat(info)
    inst["runner_id"] = info.runner_id


def env_file(path: Path) -> dict[str, str]:
    """KEY='value' lines, as systemd's EnvironmentFile reads them."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value.strip("'")
    return out


def stop_worker(inst: dict[str, Any]) -> None:
    pid = inst.pop("worker_pid", None)
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.05)


def start_worker(state: dict[str, Any], name: str) -> None:
    """``ci-pool worker`` as the unit runs it: the worker settings plus the credential file."""
    inst = state["instances"][name]
    stop_worker(inst)
    cap = inst["config"].get("user.ci-pool.capability", "")
    home = rootfs(name, "/var/lib/ci-pool")
    home.mkdir(parents=True, exist_ok=True, mode=0o750)
    env = worker_env(state, name)
    with (home.parent / "worker.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ci_pool", "worker", "--capability", cap, "--name", name],
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    inst["worker_pid"] = proc.pid


def worker_env(state: dict[str, Any], name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
    env.update(state["real_worker"])
    env.update(env_file(rootfs(name, CREDENTIALS)))
    env["CI_POOL_HOME"] = str(rootfs(name, "/var/lib/ci-pool"))
    return env


def real_doctor(state: dict[str, Any], name: str, capability: str) -> None:
    """``ci-pool doctor`` with the worker's environment, as readiness runs it."""
    res = subprocess.run(
        [sys.executable, "-m", "ci_pool", "doctor", "--json", "--skip-bench",
         "--capability", capability],
        env=worker_env(state, name),
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    if res.returncode:
        save(state)
        sys.exit(res.returncode)


def doctor(state: dict[str, Any]) -> None:
    """``ci-pool doctor --json`` on the runner: every check ok, or (``doctor_fail`` in the
    state) the docker engine failing, as doctor prints them."""
    rows = [
        {"name": "broker", "status": "ok", "detail": "answers PING", "fix": ""},
        {"name": "image linux", "status": "warn", "detail": "no digest", "fix": "push it"},
    ]
    if state.get("doctor_fail"):
        rows.append(
            {
                "name": "docker engine",
                "status": "fail",
                "detail": "cannot reach the Docker engine",
                "fix": "start dockerd (systemctl start docker)",
            }
        )
    print(json.dumps(rows))
    if state.get("doctor_fail"):
        sys.exit(1)


def options(args: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    positional: list[str] = []
    opts: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--profile", "-p", "--config", "-c", "--format", "--uid", "--gid", "--mode"):
            opts.setdefault(a.lstrip("-"), []).append(args[i + 1])
            i += 2
        elif a.startswith("--"):
            opts.setdefault(a[2:], []).append("")
            i += 1
        else:
            positional.append(a)
            i += 1
    return positional, opts


def profile_cmd(state: dict[str, Any], args: list[str]) -> bytes | None:
    sub, rest = args[0], args[1:]
    profiles = state["profiles"]
    if sub == "list":
        print(json.dumps([{"name": n, **p, "used_by": []} for n, p in sorted(profiles.items())]))
    elif sub == "create":
        if rest[0] in profiles:
            fail(f"Profile {rest[0]!r} already exists")
        profiles[rest[0]] = {"description": "", "config": {}, "devices": {}}
    elif sub == "edit":
        data = sys.stdin.buffer.read()
        if rest[0] not in profiles:
            fail("Profile not found")
        new = yaml.safe_load(data) or {}
        profiles[rest[0]] = {
            "description": new.get("description", ""),
            "config": new.get("config") or {},
            "devices": new.get("devices") or {},
        }
        return data
    elif sub == "add":
        inst = state["instances"].get(rest[0]) or fail("Instance not found")
        inst["profiles"].append(rest[1])
    else:
        fail(f"unknown profile command {sub}")
    return None


def exec_cmd(state: dict[str, Any], name: str, argv: list[str]) -> None:
    inst = state["instances"].get(name)
    if inst is None:
        fail("Instance not found")
    if inst["status"] != "Running":
        fail("Instance is not running")
    if argv[:2] == ["cloud-init", "status"]:
        print("status: done")
    elif argv[:2] == ["systemctl", "restart"] and state.get("real_worker"):
        start_worker(state, name)
    elif argv[:2] == ["systemctl", "restart"]:
        heartbeat(state, name)
    elif argv[:2] == ["rm", "-f"]:
        for path in argv[2:]:
            rootfs(name, path).unlink(missing_ok=True)
    elif argv[0] == "install" or argv[:2] == ["systemctl", "daemon-reload"]:
        pass
    elif argv[0].endswith("/bin/pip") and argv[1] == "install":
        inst["package"] = argv[-1]
    elif argv[0] == "apt-get" or argv[:2] == ["env", "DEBIAN_FRONTEND=noninteractive"]:
        inst.setdefault("apt", []).append(argv)
    elif (
        argv[:2] == ["sh", "-c"]
        and " doctor --json" in argv[2]
        and state.get("real_worker")
        and not state.get("doctor_fail")
    ):
        real_doctor(state, name, argv[2].rsplit(" ", 1)[1])
    elif argv[:2] == ["sh", "-c"] and " doctor --json" in argv[2]:
        doctor(state)
    else:
        fail(f"the stand-in does not run {argv[0]}", 127)


def main(argv: list[str]) -> None:
    state = load()
    instances = state["instances"]
    data: bytes | None = None
    verb, args = (argv[0], argv[1:]) if argv else ("", [])
    try:
        if verb == "list":
            print(json.dumps([{"name": n, **i} for n, i in sorted(instances.items())]))
        elif verb == "profile":
            data = profile_cmd(state, args)
        elif verb == "launch":
            pos, opts = options(args)
            if pos[1] in instances:
                fail(f"Instance {pos[1]!r} already exists")
            instances[pos[1]] = {
                "status": "Running",
                "type": "container",
                "image": pos[0],
                "profiles": opts.get("profile", []),
                "config": dict(c.split("=", 1) for c in opts.get("config", [])),
                "files": {},
            }
        elif verb == "config" and args[0] == "set":
            inst = instances.get(args[1]) or fail("Instance not found")
            inst["config"].update(dict(c.split("=", 1) for c in args[2:]))
        elif verb in ("start", "restart"):
            pos, _ = options(args)
            inst = instances.get(pos[0]) or fail("Instance not found")
            inst["status"] = "Running"
            heartbeat(state, pos[0])
        elif verb == "exec":
            sep = args.index("--")
            exec_cmd(state, args[0], args[sep + 1 :])
        elif verb == "file" and args[0] == "push":
            pos, opts = options(args[1:])
            data = sys.stdin.buffer.read()
            name, _, path = pos[1].partition("/")
            inst = instances.get(name) or fail("Instance not found")
            inst["files"]["/" + path] = {
                "uid": opts["uid"][0],
                "gid": opts["gid"][0],
                "mode": opts["mode"][0],
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            kept = rootfs(name, path)
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_bytes(data)
            kept.chmod(int(opts["mode"][0], 8))
        elif verb == "delete":
            pos, _ = options(args)
            gone = instances.pop(pos[0], None)
            if gone is None:
                fail("Instance not found")
            stop_worker(gone)
        else:
            fail(f"unknown command {' '.join(argv[:2])}")
    finally:
        record(argv, data)
    save(state)


if __name__ == "__main__":
    main(sys.argv[1:])
