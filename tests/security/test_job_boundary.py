"""The job boundary (issue 12, attacks 1-4 and 14), tried as an attacker would, on a real
worker, dockerd, git daemon and Redis: nothing a job can write is ever followed by the
runner, nothing it leaves behind can block the runner, and secrets stay masked."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ci_pool.core.masking import Masker
from ci_pool.core.specs import parse_job_spec
from ci_pool.store import Job
from tests.conftest import SECRET_VALUE, GitServer, Harness, Worker

pytestmark = pytest.mark.integration


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A host file only the runner's user could reach (a signing key, say)."""
    path = tmp_path / "signing-key"
    path.write_text(f"stolen=HOST-SIGNING-KEY-{uuid.uuid4().hex}\n")
    return path


@pytest.fixture(scope="module")
def iso_worker(harness: Harness) -> Worker:
    """A host-mode worker (the iso capability runs steps on the runner itself)."""
    return harness.start_worker("iso")


def run_job(h: Harness, git: GitServer, capability: str = "linux", **spec: Any) -> Job:
    pool = h.pool()
    job = pool.submit(
        parse_job_spec(
            {"repo": git.url(), "ref": "main", "capability": capability, **spec},
            allow_local_repos=False,
        )
    )
    return pool.wait(job.id, timeout=120)


def run_workflow(h: Harness, git: GitServer, text: str) -> str:
    """Submit a one-job workflow; the id of its job."""
    pool = h.pool()
    pipe = pool.submit_pipeline(text, "attack.yml", git.url(), "main")
    (job,) = pool.store.pipeline_jobs(pipe.id)
    return job.id


def wait_final(h: Harness, job_id: str, within: float) -> Job:
    pool = h.pool()
    deadline = time.monotonic() + within
    while (job := pool.get(job_id)).state in ("queued", "running", "blocked"):
        assert time.monotonic() < deadline, f"job {job_id} still {job.state} after {within}s"
        time.sleep(0.2)
    return job


def store_dump(h: Harness) -> str:
    db = h.settings().resolved_store_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        return "\n".join(conn.iterdump())


PLANT = 'ln -sf {victim} "$(dirname "$0")/step-2.sh" && echo planted || echo refused by mount'


def test_attack1_docker_step_cannot_point_the_next_script_at_a_host_file(
    harness: Harness, git_server: GitServer, linux_worker: Worker, victim: Path
) -> None:
    before = victim.read_bytes()
    job = run_job(
        harness,
        git_server,
        steps=[{"run": PLANT.format(victim=victim)}, {"run": "echo second step ran"}],
    )
    assert victim.read_bytes() == before
    lines = harness.pool().store.read_log(job.id).splitlines()
    assert "refused by mount" in lines  # the scripts directory is read-only in the job
    assert "second step ran" in lines
    assert job.state == "succeeded", job.reason


def test_attack1_host_step_cannot_point_the_next_script_at_a_host_file(
    harness: Harness, git_server: GitServer, iso_worker: Worker, victim: Path
) -> None:
    before = victim.read_bytes()
    job = run_job(
        harness,
        git_server,
        capability="iso",
        steps=[{"run": PLANT.format(victim=victim)}, {"run": "echo second step ran"}],
    )
    assert victim.read_bytes() == before
    lines = harness.pool().store.read_log(job.id).splitlines()
    assert "second step ran" not in lines
    assert (
        "##[ci-pool] step 2 not run: step-2.sh: already exists (made by the job); not written"
        in lines
    )
    assert (job.state, job.reason) == ("failed", "step 2 exited with code 1")


LEAK = """\
name: leak
on: push
jobs:
  leak:
    runs-on: {capability}
    outputs:
      stolen: ${{{{ steps.s.outputs.stolen }}}}
    steps:
      - id: s
        run: rm -f "$GITHUB_OUTPUT" && ln -s {target} "$GITHUB_OUTPUT"
"""


def worker_for(request: pytest.FixtureRequest, capability: str) -> None:
    """Start the worker of ``capability``: docker (linux) or host mode (iso)."""
    request.getfixturevalue("linux_worker" if capability == "linux" else "iso_worker")


@pytest.mark.parametrize(
    ("capability", "target"),
    [("linux", "host-file"), ("linux", "/proc/self/environ"), ("iso", "/proc/self/environ")],
)
def test_attack2_output_file_swapped_for_a_symlink_leaks_nothing(
    request: pytest.FixtureRequest,
    harness: Harness,
    git_server: GitServer,
    victim: Path,
    capability: str,
    target: str,
) -> None:
    worker_for(request, capability)
    path = str(victim) if target == "host-file" else target
    text = LEAK.format(target=path, capability=capability)
    job = wait_final(harness, run_workflow(harness, git_server, text), 90)
    assert (job.state, job.reason) == ("failed", "step 1 exited with code 1")
    log = harness.pool().store.read_log(job.id)
    assert (
        "##[ci-pool] step 1 failed: $GITHUB_OUTPUT output-1: is a symbolic link, "
        "not a regular file" in log
    )
    assert job.outputs == {"stolen": ""}
    # Neither the host file nor the worker's environment reached the store.
    dump = store_dump(harness)
    # Other jobs of the shared pool may show their own workspace (host mode lives under the
    # pool's home); this job's rows must not hold the worker's environment.
    mine = "\n".join(
        line for line in dump.splitlines() if job.id in line or str(job.pipeline_id) in line
    )
    assert job.id in mine
    secret = victim.read_text().strip().split("=", 1)[1]
    for leaked in (secret, harness.redis_url):
        assert leaked not in dump
        assert leaked not in log
    assert str(harness.root / "home") not in mine
    assert str(harness.root / "home") not in log


FIFO = """\
name: fifo
on: push
jobs:
  fifo:
    runs-on: {capability}
    timeout-minutes: 1
    steps:
      - id: s
        run: rm -f "$GITHUB_OUTPUT" && mkfifo "$GITHUB_OUTPUT"
        continue-on-error: {go_on}
      - run: echo after the fifo; sleep 120
"""
FIFO_LINE = "##[ci-pool] step 1 failed: $GITHUB_OUTPUT output-1: is a FIFO, not a regular file"


@pytest.mark.parametrize("capability", ["linux", "iso"])
def test_attack3_fifo_as_output_file_fails_the_step_well_within_the_timeout(
    request: pytest.FixtureRequest, harness: Harness, git_server: GitServer, capability: str
) -> None:
    worker_for(request, capability)
    started = time.monotonic()
    text = FIFO.format(go_on="false", capability=capability)
    job = wait_final(harness, run_workflow(harness, git_server, text), 45)
    assert time.monotonic() - started < 45  # the job timeout is 60 s
    assert (job.state, job.reason) == ("failed", "step 1 exited with code 1")
    assert FIFO_LINE in harness.pool().store.read_log(job.id).splitlines()


def test_attack3_fifo_as_output_file_does_not_stop_cancel(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    job_id = run_workflow(harness, git_server, FIFO.format(go_on="true", capability="linux"))
    pool = harness.pool()
    deadline = time.monotonic() + 45
    while "after the fifo" not in pool.store.read_log(job_id):
        assert time.monotonic() < deadline, "the runner never got past the FIFO"
        time.sleep(0.2)
    assert FIFO_LINE in pool.store.read_log(job_id)
    pool.cancel(job_id)
    job = wait_final(harness, job_id, 30)
    assert job.state == "cancelled"


SWAP = """\
mkdir -p dist/sub && echo kept > dist/keep.txt
i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo "artifact $i" > dist/sub/f$i.bin; done
cd dist
sh -c 'while :; do mv sub .real; ln -s {keys} sub; rm sub; mv .real sub; sleep 0.01; done' \
  >/dev/null 2>&1 &
sleep 1
"""


def test_attack4_artifacts_swapped_for_symlinks_during_collection_never_copy_a_host_file(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    """While collection runs the job keeps swapping a directory of its artifacts for a
    symlink to a host directory holding a key under the same names."""
    n = 1000
    keys = tmp_path / "keys"
    keys.mkdir()
    secret = f"HOST-SIGNING-KEY-{uuid.uuid4().hex}\n"
    for i in range(1, n + 1):
        (keys / f"f{i}.bin").write_text(secret)
    job = run_job(
        harness,
        git_server,
        artifacts=["dist/**"],
        steps=[{"run": SWAP.format(n=n, keys=keys)}],
    )
    assert job.state == "succeeded", job.reason
    pool = harness.pool()
    collected = pool.store.artifacts(job.id)
    assert "dist/keep.txt" in {a.path for a in collected}
    key_sha = hashlib.sha256(secret.encode()).hexdigest()
    assert key_sha not in {a.sha256 for a in collected}
    dest = harness.settings().resolved_artifact_root / job.id
    for f in dest.rglob("*"):
        assert not f.is_symlink()
        assert not f.is_file() or f.read_text() != secret
    # Each collected file is what the job wrote there, hashed from the bytes copied.
    for a in collected:
        data = (dest / str(job.attempt) / a.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == a.sha256
        assert data.startswith(b"artifact ") or a.path == "dist/keep.txt"
    assert secret.strip() not in pool.store.read_log(job.id)


LOOP = 'i=0; while [ $i -lt {copies} ]; do printf %s "$API_TOKEN"; i=$((i+1)); done; echo'


def test_attack14_secret_across_the_long_line_cut_is_masked(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    """A line without end is cut past 64 KiB; the secret printed back to back (so some
    occurrence always spans the cut) must be masked whole on each side of it."""
    copies = 4000  # 88 KB of secret without a newline
    job = run_job(
        harness,
        git_server,
        secrets=["API_TOKEN"],
        steps=[{"run": LOOP.format(copies=copies)}],
    )
    assert job.state == "succeeded", job.reason
    log = harness.pool().store.read_log(job.id)
    body = [ln for ln in log.splitlines() if not ln.startswith("##[")]
    assert len(body) >= 2  # the long line was cut
    assert "".join(body) == "***" * copies  # no piece of a secret on either side of a cut
    assert Masker([SECRET_VALUE]).mask(log) == log


def _running(marker: str) -> str:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout


@pytest.mark.parametrize(
    "start",
    [
        "sh -c \"trap '' TERM HUP INT; sleep 300; true\" {marker} > /dev/null 2>&1 &",
        "nohup sh -c 'sleep 300; true' {marker} > /dev/null 2>&1 &",
        "(sh -c 'sleep 300; true' {marker} &) ; sleep 0.2",  # orphaned at once
    ],
)
def test_attack15_a_host_background_process_does_not_outlive_its_job(
    harness: Harness, git_server: GitServer, iso_worker: Worker, start: str
) -> None:
    # Background processes run on through the job's later steps (as on GitHub), so a step
    # may try to keep one past the job: deaf to TERM/HUP, under nohup, or orphaned.
    marker = f"ci-pool-attack-{uuid.uuid4().hex}"
    job = run_job(
        harness,
        git_server,
        capability="iso",
        steps=[
            {"run": start.format(marker=marker) + "\necho left running"},
            {"run": f"pgrep -f {marker} > /dev/null && echo still there"},
        ],
    )
    assert job.state == "succeeded", job.reason
    lines = harness.pool().store.read_log(job.id).splitlines()
    assert "left running" in lines and "still there" in lines
    assert _running(marker) == "", "a background process outlived its job"


def test_attack15_cancel_kills_the_background_processes_of_earlier_steps(
    harness: Harness, git_server: GitServer, iso_worker: Worker
) -> None:
    marker = f"ci-pool-attack-{uuid.uuid4().hex}"
    pool = harness.pool()
    job = pool.submit(
        parse_job_spec(
            {
                "repo": git_server.url(), "ref": "main", "capability": "iso",
                "steps": [
                    {"run": f"nohup sh -c 'sleep 300; true' {marker} > /dev/null 2>&1 &"},
                    {"run": "echo waiting; sleep 120"},
                ],
            },
            allow_local_repos=False,
        )
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while "waiting" not in pool.store.read_log(job.id).splitlines():
        assert time.monotonic() < deadline, "the second step never started"
        time.sleep(0.1)
    assert _running(marker), "the first step's background process is not running"
    pool.cancel(job.id)
    assert wait_final(harness, job.id, within=60).state == "cancelled"
    deadline = time.monotonic() + 15
    while _running(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running(marker) == "", "a background process outlived its cancelled job"
