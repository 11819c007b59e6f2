"""README "Using it", run verbatim: its shell blocks against ``ci-pool up`` on a fresh home
(HOME and XDG_DATA_HOME in a tmp dir, no CI_POOL_* variable), from another directory."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need

# About a minute on an idle 2-core runner; each CLI start takes several seconds on a loaded one.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

README = Path(__file__).resolve().parents[2] / "README.md"


def using_it_commands() -> list[tuple[str, int]]:
    """(command, expected exit code) for every command of the README's "Using it" shell
    blocks, continuation lines joined; a comment "exits N" gives its expected code."""
    text = README.read_text()
    section = text.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            code, _, comment = line.partition("  #")
            if code.strip():
                want = re.search(r"\bexits (\d+)", comment)
                commands.append((code.strip(), int(want.group(1)) if want else 0))
    return commands


def procs_with(marker: str) -> list[int]:
    """Pids of processes whose environment holds ``marker`` (everything this pool started)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def stopped_or_killed(up: subprocess.Popen[bytes], marker: str, log: Path) -> int:
    """up's exit code once Ctrl-C has stopped it; if it is still running after 60 s, where
    its threads wait (for the failure's message), then every process of its pool killed, so
    that nothing of it outlives the test."""
    try:
        return up.wait(timeout=60)
    except subprocess.TimeoutExpired:
        waits = {}
        for task in Path(f"/proc/{up.pid}/task").glob("*"):
            try:
                waits[task.name] = (task / "wchan").read_text()
            except OSError:
                continue
        for pid in procs_with(marker):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        up.wait(timeout=30)
        raise AssertionError(
            f"ci-pool up still ran 60 s after Ctrl-C (threads waiting in {waits}):\n"
            + log.read_text()
        ) from None


@pytest.fixture
def fresh_user(tmp_path: Path, docker_client: Any) -> Iterator[tuple[dict[str, str], Path]]:
    """A user with an empty data dir; the home's config only renames the linux image, so
    that building it here touches no image another test uses."""
    tag = f"ci-pool-test/readme-linux:{uuid.uuid4().hex[:8]}"
    data = tmp_path / "data"
    home = data / "ci-pool"
    home.mkdir(parents=True)
    (home / "ci-pool.toml").write_text(
        f'stop_grace = 2\nheartbeat_interval = 1\n\n[capabilities.linux]\nimage = "{tag}"\n'
        # iso in docker mode without its image: up skips it (one worker less to start)
        '\n[capabilities.iso]\nmode = "docker"\nimage = "ci-pool-test/absent:none"\n'
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "ci-pool"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m ci_pool "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
    env.update(
        HOME=str(tmp_path / "user"),
        XDG_DATA_HOME=str(data),
        PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONPATH=str(README.parent),
        GIT_AUTHOR_NAME="readme",
        GIT_AUTHOR_EMAIL="readme@localhost",
        GIT_COMMITTER_NAME="readme",
        GIT_COMMITTER_EMAIL="readme@localhost",
    )
    yield env, home
    try:
        docker_client.images.remove(tag, force=True)
    except Exception:
        pass


def start_up(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["ci-pool", "up"], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 90
    while "ready:" not in log.read_text():
        assert proc.poll() is None, f"ci-pool up exited {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"ci-pool up never got ready:\n{log.read_text()}"
        time.sleep(0.2)
    return proc


def test_readme_using_it_runs_verbatim_on_ci_pool_up(
    fresh_user: tuple[dict[str, str], Path], tmp_path: Path, busybox_image: str
) -> None:
    env, home = fresh_user
    need(subprocess.run(["which", "busybox"], capture_output=True).returncode == 0, "no busybox")
    commands = using_it_commands()
    assert commands[0][0].startswith("ci-pool images build linux")
    assert any(c == "ci-pool up" for c, _ in commands)
    work = tmp_path / "work"  # neither the home nor the source tree
    work.mkdir()
    build = subprocess.run(shlex.split(commands[0][0]), env=env, cwd=work, capture_output=True,
                           text=True, timeout=300, check=False)  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    up_log = tmp_path / "up.log"
    up = start_up(env, work, up_log)
    try:
        assert (
            "skipped iso: image ci-pool-test/absent:none is not here; fix: ci-pool images build iso"
            in up_log.read_text()
        )
        assert "workers linux\n" in up_log.read_text()
        record = json.loads((home / "up.json").read_text())
        assert (home / "up.json").stat().st_mode & 0o777 == 0o600
        assert (home / "up-token").stat().st_mode & 0o777 == 0o600
        token = (home / "up-token").read_text().strip()
        assert token in up_log.read_text() and token not in (home / "up.json").read_text()
        # a second up says where the first one runs
        again = subprocess.run(["ci-pool", "up"], env=env, cwd=tmp_path, capture_output=True,
                               text=True, timeout=60, check=False)  # fmt: skip
        assert again.returncode == 1, again.stderr
        assert f"pid {up.pid}" in again.stderr and record["api_url"] in again.stderr

        rest = [(c, want) for c, want in commands[1:] if c != "ci-pool up"]
        lines = ["set +e"]
        for i, (cmd, _) in enumerate(rest):
            lines += [cmd, f'echo "{i} $?" >> "$RCS"']
        rcs = tmp_path / "rcs"
        script = "\n".join(lines)
        res = subprocess.run(["bash", "-c", script], env={**env, "RCS": str(rcs)}, cwd=work,
                             capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
        got = dict(line.split() for line in rcs.read_text().splitlines())
        for i, (cmd, want) in enumerate(rest):
            assert got.get(str(i)) == str(want), (
                f"{cmd!r} exited {got.get(str(i))}, README says {want}\n{res.stdout}\n{res.stderr}"
            )
        assert re.search(r"hello from [a-z0-9.-]+-linux-1", res.stdout)  # `ci-pool logs`
        assert f"home {home}" in res.stdout  # status names the home
        # show ID from yet another directory finds the job
        job_id = re.search(r"job ([0-9a-f]+)\s+succeeded", res.stdout)
        assert job_id, res.stdout
        other = tmp_path / "other"
        other.mkdir()
        show = subprocess.run(["ci-pool", "show", job_id.group(1)], env=env, cwd=other,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert show.returncode == 0 and "succeeded" in show.stdout, show.stderr
        assert not (other / ".ci-pool").exists() and list(other.iterdir()) == []
    finally:
        os.kill(up.pid, signal.SIGINT)  # Ctrl-C
        rc = stopped_or_killed(up, f"XDG_DATA_HOME={env['XDG_DATA_HOME']}\0", up_log)
    assert rc == 0, up_log.read_text()
    assert "ci-pool up stopped" in up_log.read_text()
    assert not (home / "up.json").exists()
    assert procs_with(f"XDG_DATA_HOME={env['XDG_DATA_HOME']}\0") == []  # nothing left running
