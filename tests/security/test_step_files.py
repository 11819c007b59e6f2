"""The files and commands of a job's steps, tried as an attacker would, on real workers
(Docker and host mode): $GITHUB_ENV/$GITHUB_PATH/$GITHUB_STEP_SUMMARY swapped for links
and FIFOs, a huge summary, an annotation flood, masks meant to unmask a secret, and
$GITHUB_ENV aimed at the runner's own variables and at the next job."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_pool import defaults
from ci_pool.embedded import RedisServer
from ci_pool.store import Job
from tests.conftest import SECRET_VALUE, GitServer, Harness, Worker, isolated_harness
from tests.security.test_job_boundary import run_job, run_workflow, store_dump, wait_final

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def iso_worker(harness: Harness) -> Worker:
    """A host-mode worker (the iso capability runs steps on the runner itself)."""
    return harness.start_worker("iso")


def worker_for(request: pytest.FixtureRequest, capability: str) -> None:
    request.getfixturevalue("linux_worker" if capability == "linux" else "iso_worker")


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "signing-key"
    path.write_text(f"STOLEN=HOST-SIGNING-KEY-{uuid.uuid4().hex}\n")
    path.chmod(0o644)
    tmp_path.chmod(0o755)
    return path


SWAP = """\
name: swap
on: push
jobs:
  swap:
    runs-on: {capability}
    timeout-minutes: 1
    steps:
      - run: rm -f "${variable}" && {make}
      - if: always()
        run: echo "after STOLEN=[$STOLEN]"
"""


@pytest.mark.parametrize("capability", ["linux", "iso"])
@pytest.mark.parametrize(
    ("variable", "stem"),
    [("GITHUB_ENV", "env"), ("GITHUB_PATH", "path"), ("GITHUB_STEP_SUMMARY", "summary")],
)
def test_a_step_file_swapped_for_a_symlink_is_never_followed(
    request: pytest.FixtureRequest,
    harness: Harness,
    git_server: GitServer,
    victim: Path,
    capability: str,
    variable: str,
    stem: str,
) -> None:
    worker_for(request, capability)
    make = f'ln -s {victim} "${variable}"'
    text = SWAP.format(capability=capability, variable=variable, make=make)
    job = wait_final(harness, run_workflow(harness, git_server, text), 90)
    log = harness.pool().store.read_log(job.id)
    assert (job.state, job.reason) == ("failed", "step 1 exited with code 1"), log
    lines = log.splitlines()
    assert (
        f"##[ci-pool] step 1 failed: ${variable} {stem}-1: is a symbolic link, "
        "not a regular file" in lines
    )
    assert "after STOLEN=[]" in lines
    secret = victim.read_text().strip().split("=", 1)[1]
    assert secret not in log
    assert secret not in store_dump(harness)


@pytest.mark.parametrize("capability", ["linux", "iso"])
def test_a_fifo_as_github_env_fails_the_step_well_within_the_timeout(
    request: pytest.FixtureRequest, harness: Harness, git_server: GitServer, capability: str
) -> None:
    worker_for(request, capability)
    started = time.monotonic()
    text = SWAP.format(capability=capability, variable="GITHUB_ENV", make='mkfifo "$GITHUB_ENV"')
    job = wait_final(harness, run_workflow(harness, git_server, text), 45)
    assert time.monotonic() - started < 45  # the job timeout is 60 s
    assert (job.state, job.reason) == ("failed", "step 1 exited with code 1")
    assert (
        "##[ci-pool] step 1 failed: $GITHUB_ENV env-1: is a FIFO, not a regular file"
        in harness.pool().store.read_log(job.id).splitlines()
    )


ROW = "| row | of a very large table of results ............ |"


def test_a_huge_summary_is_cut_at_the_limit_with_a_notice(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    cap = defaults.STEP_SUMMARY_MAX_BYTES
    job = run_job(
        harness,
        git_server,
        steps=[
            {
                "name": "big",
                # 3 MiB of markdown table rows.
                "run": f"yes '{ROW}' | head -c 3145728 >> \"$GITHUB_STEP_SUMMARY\"",
            }
        ],
    )
    assert job.state == "succeeded", job.reason
    (summary,) = harness.pool().store.summaries(job.id)
    body, note = summary.markdown.split("\n\n> **Note:**")
    assert cap - len(ROW) - 1 <= len(body.encode()) <= cap
    assert set(body.split("\n")) == {ROW}  # whole lines only
    assert f"cut at the {cap} byte limit" in note
    assert (
        f"##[ci-pool] step 1: $GITHUB_STEP_SUMMARY is larger than the {cap} byte limit; "
        "the summary was cut there" in harness.pool().store.read_log(job.id).splitlines()
    )


FLOOD = (
    "i=0; while [ $i -lt 200 ]; do i=$((i+1)); "
    'echo "::error file=f$i.c,line=$i::error $i"; echo "::warning::warning $i"; done'
)


def test_an_annotation_flood_is_bounded_per_step_and_per_job(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    long = "x" * 20_000
    job = run_job(
        harness,
        git_server,
        steps=[
            {"run": f'echo "::notice title=big::{long}"'},
            *({"run": FLOOD} for _ in range(4)),
        ],
    )
    assert job.state == "succeeded", job.reason
    found = harness.pool().store.annotations(job.id)
    assert len(found) == defaults.ANNOTATIONS_PER_JOB
    assert len(found[0].message) == defaults.ANNOTATION_MAX_CHARS
    per_step = {}
    for a in found[1:]:
        per_step[(a.step, a.level)] = per_step.get((a.step, a.level), 0) + 1
    # 10 errors and 10 warnings in each of steps 2 and 3, then 9 more: the job's bound.
    assert per_step == {(2, "error"): 10, (2, "warning"): 10, (3, "error"): 10,
                        (3, "warning"): 10, (4, "error"): 5, (4, "warning"): 4}  # fmt: skip
    log = harness.pool().store.read_log(job.id).splitlines()
    # Every command still reaches the log; the bounds are said once each.
    assert sum(line.startswith("##[error]f") for line in log) == 800
    assert log.count(
        "##[ci-pool] more than 10 error annotations per step: further ones stay in the log only"
    ) == 2  # fmt: skip
    assert log.count(
        "##[ci-pool] more than 50 annotations per job: further ones stay in the log only"
    ) == 1  # fmt: skip


def test_add_mask_cannot_unmask_a_secret(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    """Masks that cover part of a secret, or start just before it, must not leave the rest
    of it readable; commands turned off do not turn masking off."""
    job = run_job(
        harness,
        git_server,
        secrets=["API_TOKEN"],
        steps=[
            {
                "run": 'echo "::add-mask::Z$(printf %.5s "$API_TOKEN")"\n'
                'echo "one Z$API_TOKEN"\n'
                'echo "::add-mask::${API_TOKEN#?????}tail"\n'
                'echo "two ${API_TOKEN}tail"\n'
                'echo "::add-mask::"\n'
                'echo "::stop-commands::tok"\n'
                'echo "three $API_TOKEN"\n'
                'echo "::tok::"\n'
            }
        ],
    )
    assert job.state == "succeeded", job.reason
    log = harness.pool().store.read_log(job.id)
    lines = log.splitlines()
    assert ["one ***", "two ***", "three ***"] == [
        ln for ln in lines if ln.split(" ")[0] in ("one", "two", "three")
    ]
    assert lines.count("::add-mask::***") == 3
    for piece in (SECRET_VALUE[5:], SECRET_VALUE[:5], SECRET_VALUE[3:12]):
        assert piece not in log


@pytest.fixture(scope="module")
def lone_iso(session_dir: Path, redis_server: RedisServer, busybox_image: str) -> Iterator[Harness]:
    """A pool of its own (Redis db 9) with one host-mode worker, so two jobs in a row
    surely run in the same worker process."""
    h = isolated_harness(session_dir / "lone-iso", redis_server, busybox_image, 14)
    h.start_worker("iso")
    yield h
    h.stop()


def test_github_env_cannot_set_the_runners_variables_or_reach_the_next_job(
    lone_iso: Harness, git_server: GitServer
) -> None:
    harness = lone_iso
    marker = f"LEAK_{uuid.uuid4().hex}"
    first = run_job(
        harness,
        git_server,
        capability="iso",
        steps=[
            {
                "run": f'echo "{marker}=1" >> "$GITHUB_ENV"\n'
                'echo "CI_POOL_JOB_ID=forged" >> "$GITHUB_ENV"\n'
                'echo "ci_pool_repo=forged" >> "$GITHUB_ENV"\n'
                'echo "GITHUB_OUTPUT=/tmp/elsewhere" >> "$GITHUB_ENV"\n'
                'echo "NODE_OPTIONS=--require /tmp/evil.js" >> "$GITHUB_ENV"\n'
                'echo "/poisoned/bin" >> "$GITHUB_PATH"\n'
            },
            {
                "run": f'echo "marker=${marker}"; echo "job=$CI_POOL_JOB_ID"; '
                'echo "output=${GITHUB_OUTPUT##*/}"; echo "node=[$NODE_OPTIONS]"; '
                'case ":$PATH:" in *:/poisoned/bin:*) echo path=poisoned;; esac'
            },
        ],
    )
    assert first.state == "succeeded", first.reason
    lines = harness.pool().store.read_log(first.id).splitlines()
    assert "marker=1" in lines  # the job's own later steps get what it set
    assert f"job={first.id}" in lines
    assert "output=output-2" in lines
    assert "node=[]" in lines
    assert "path=poisoned" in lines
    for name in ("CI_POOL_JOB_ID", "ci_pool_repo", "GITHUB_OUTPUT", "NODE_OPTIONS"):
        assert (
            f"##[ci-pool] step 1: $GITHUB_ENV cannot set {name} (reserved for the runner); "
            "ignored" in lines
        )
    second: Job = run_job(
        harness,
        git_server,
        capability="iso",
        steps=[
            {
                "run": f'echo "marker=[${marker}]"; '
                'case ":$PATH:" in *:/poisoned/bin:*) echo path=poisoned;; esac; echo done'
            }
        ],
    )
    assert second.runner_id == first.runner_id  # the same worker process ran both
    lines = harness.pool().store.read_log(second.id).splitlines()
    assert "marker=[]" in lines and "done" in lines
    assert "path=poisoned" not in lines
