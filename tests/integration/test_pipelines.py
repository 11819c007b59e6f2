"""Workflow pipelines end to end on real Redis, Celery workers and Docker: the order of a
release pipeline, a failure skipping its dependents, fail-fast cancelling matrix siblings."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ci_pool.embedded import make_repo
from tests.conftest import GitServer, Harness, Worker

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"


@pytest.fixture(scope="module")
def web_worker(harness: Harness) -> Worker:
    return harness.start_worker("flutter-web")


def pipeline_json(h: Harness, pipeline_id: str) -> dict[str, Any]:
    res = h.cli("pipeline", "show", pipeline_id, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def run_workflow(h: Harness, git: GitServer, path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    res = h.cli("run", str(path), "--repo", git.url(), "--ref", "main", *extra, timeout=240)
    assert "Traceback" not in res.stderr, res.stderr
    pid = res.stderr.split()[1].rstrip(":")
    return res.returncode, pipeline_json(h, pid)


def test_release_pipeline_runs_in_dependency_order_on_three_capabilities(
    harness: Harness,
    git_server: GitServer,
    linux_worker: Worker,
    android_worker: Worker,
    web_worker: Worker,
) -> None:
    code, pipe = run_workflow(harness, git_server, EXAMPLES / "release.yml")
    jobs = {j["key"]: j for j in pipe["jobs"]}
    assert code == 0, pipe
    assert pipe["state"] == "succeeded"
    assert set(jobs) == {
        "lint",
        "build",
        "android (arm64)",
        "android (x86_64)",
        "web",
        "package",
        "deploy",
    }
    assert all(j["state"] == "succeeded" for j in jobs.values())
    assert {j["capability"] for j in jobs.values()} == {"linux", "android", "flutter-web"}
    assert jobs["web"]["runner_id"] == web_worker.runner_id
    assert jobs["android (arm64)"]["runner_id"] == android_worker.runner_id
    for job in jobs.values():
        for need in job["needs"]:
            assert jobs[need]["finished_at"] <= job["started_at"], (need, job["key"])
    assert jobs["build"]["outputs"] == {"version": "1.2.3"}
    pool = harness.pool()
    assert "android x86_64 build of 1.2.3" in pool.store.read_log(jobs["android (x86_64)"]["id"])
    sha = git_server.shas["app.git"]
    assert f"building demo-app 1.2.3 at {sha}" in pool.store.read_log(jobs["build"]["id"])


def test_failed_job_skips_dependents_unless_their_if_says_otherwise(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    wf = tmp_path / "fail.yml"
    wf.write_text(
        "name: fail\non: push\njobs:\n"
        "  build:\n    runs-on: linux\n    steps:\n      - run: echo broken; exit 4\n"
        "  test:\n    needs: build\n    runs-on: linux\n    steps:\n      - run: echo never\n"
        "  report:\n    needs: build\n    if: failure()\n    runs-on: linux\n"
        "    steps:\n      - run: echo reporting ${{ needs.build.result }}\n"
        "  after-test:\n    needs: test\n    runs-on: linux\n    steps:\n      - run: 'true'\n"
        # failure() sees build's failure behind two skipped jobs, as on GitHub.
        "  notify:\n    needs: after-test\n    if: failure()\n    runs-on: linux\n"
        "    steps:\n      - run: echo notifying\n"
        # A cleanup that always runs does not let the failure through to publish.
        "  cleanup:\n    needs: build\n    if: always()\n    runs-on: linux\n"
        "    steps:\n      - run: echo cleaning\n"
        "  publish:\n    needs: cleanup\n    runs-on: linux\n    steps:\n      - run: 'true'\n"
        # A gate over every need's result (an object filter), in the order it lists them.
        "  gate:\n    needs: [cleanup, build]\n    runs-on: linux\n"
        "    if: always() && contains(needs.*.result, 'failure')\n"
        "    steps:\n      - run: echo \"gate saw ${{ join(needs.*.result, ' ') }}\"\n"
    )
    code, pipe = run_workflow(harness, git_server, wf)
    jobs = {j["key"]: j for j in pipe["jobs"]}
    assert code == 1
    assert pipe["state"] == "failed"
    assert (jobs["build"]["state"], jobs["build"]["exit_code"]) == ("failed", 4)
    assert jobs["test"]["state"] == "skipped"
    assert "needs build did not succeed" in jobs["test"]["reason"]
    assert jobs["after-test"]["state"] == "skipped"
    assert jobs["report"]["state"] == "succeeded"
    log = harness.pool().store.read_log(jobs["report"]["id"])
    assert "reporting failure" in log.splitlines()
    assert (jobs["notify"]["state"], jobs["cleanup"]["state"]) == ("succeeded", "succeeded")
    assert "notifying" in harness.pool().store.read_log(jobs["notify"]["id"]).splitlines()
    assert jobs["publish"]["state"] == "skipped"
    assert "build further up the needs did not succeed" in jobs["publish"]["reason"]
    assert jobs["gate"]["state"] == "succeeded", jobs["gate"]
    gate_log = harness.pool().store.read_log(jobs["gate"]["id"]).splitlines()
    assert "gate saw success failure" in gate_log


def test_fail_fast_cancels_matrix_siblings(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    wf = tmp_path / "matrix.yml"
    wf.write_text(
        "name: matrix\non: push\njobs:\n"
        "  test:\n    runs-on: linux\n    strategy:\n      matrix:\n        n: [1, 2, 3, 4]\n"
        "    steps:\n      - run: if [ ${{ matrix.n }} = 1 ]; then sleep 1; exit 1; fi; sleep 60\n"
    )
    code, pipe = run_workflow(harness, git_server, wf)
    states = {j["key"]: j["state"] for j in pipe["jobs"]}
    assert code == 1
    assert states["test (1)"] == "failed"
    assert {states[f"test ({n})"] for n in (2, 3, 4)} == {"cancelled"}
    reasons = [j["reason"] for j in pipe["jobs"] if j["state"] == "cancelled"]
    assert any("fail-fast: test (1) failed" in (r or "") for r in reasons)


def test_invalid_workflow_is_refused_with_file_line_and_nothing_written(
    harness: Harness, git_server: GitServer, tmp_path: Path
) -> None:
    wf = tmp_path / "bad.yml"
    wf.write_text(
        "name: bad\non: push\njobs:\n  a:\n    runs-on: linux\n    steps:\n"
        "      - uses: actions/setup-node\n"
    )
    before = len(harness.pool().store.list_jobs(limit=100_000))
    res = harness.cli("run", str(wf), "--repo", git_server.url(), "--ref", "main")
    assert res.returncode == 2
    assert f"{wf}:7:" in res.stderr and "'actions/setup-node' is not an action" in res.stderr
    assert len(harness.pool().store.list_jobs(limit=100_000)) == before
    val = harness.cli("validate", str(wf), str(EXAMPLES / "release.yml"))
    assert val.returncode == 1 and f"{wf}:7:" in val.stderr
    assert harness.cli("validate", str(EXAMPLES / "release.yml")).returncode == 0


def test_retry_reruns_failed_jobs_and_keeps_passed_ones(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    flag = harness.root / "home" / "retry-flag"
    wf = tmp_path / "flaky.yml"
    wf.write_text(
        "name: flaky\non: push\njobs:\n"
        "  ok:\n    runs-on: linux\n    steps:\n      - run: echo fine\n"
        "  flaky:\n    needs: ok\n    runs-on: linux\n    steps:\n"
        '      - run: test "$CI_POOL_ATTEMPT" -ge 2\n'
    )
    code, pipe = run_workflow(harness, git_server, wf)
    assert code == 1
    jobs = {j["key"]: j for j in pipe["jobs"]}
    res = harness.cli("retry", pipe["id"], timeout=240)
    assert res.returncode == 0, res.stderr
    again = {j["key"]: j for j in pipeline_json(harness, pipe["id"])["jobs"]}
    assert again["ok"]["attempt"] == 1 and again["ok"]["id"] == jobs["ok"]["id"]
    assert (again["flaky"]["state"], again["flaky"]["attempt"]) == ("succeeded", 2)
    assert not flag.exists()


def test_max_parallel_bounds_concurrent_cells(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    # The linux worker has two slots; max-parallel 1 must still run the cells one by one.
    wf = tmp_path / "serial.yml"
    wf.write_text(
        "name: serial\non: push\njobs:\n"
        "  cell:\n    runs-on: linux\n    strategy:\n      max-parallel: 1\n"
        "      matrix:\n        n: [1, 2, 3]\n    steps:\n      - run: sleep 1\n"
    )
    code, pipe = run_workflow(harness, git_server, wf)
    assert code == 0
    spans = sorted((j["started_at"], j["finished_at"]) for j in pipe["jobs"])
    for (_s1, end1), (start2, _e2) in itertools.pairwise(spans):
        assert end1 <= start2, spans


def test_pipeline_cancel_stops_running_and_waiting_jobs(
    harness: Harness,
    git_server: GitServer,
    linux_worker: Worker,
    tmp_path: Path,
) -> None:
    wf = tmp_path / "long.yml"
    wf.write_text(
        "name: long\non: push\njobs:\n"
        "  slow:\n    runs-on: linux\n    steps:\n      - run: sleep 60\n"
        "  after:\n    needs: slow\n    runs-on: linux\n    steps:\n      - run: 'true'\n"
        # As on GitHub: a cleanup job runs after a cancel, a !cancelled() one does not.
        "  cleanup:\n    needs: slow\n    if: always()\n    runs-on: linux\n"
        "    steps:\n      - run: echo cleaning after ${{ needs.slow.result }}\n"
        "  on-cancel:\n    needs: after\n    if: cancelled()\n    runs-on: linux\n"
        "    steps:\n      - run: 'true'\n"
        "  guarded:\n    needs: slow\n    if: '!cancelled()'\n    runs-on: linux\n"
        "    steps:\n      - run: 'true'\n"
    )
    res = harness.cli("run", str(wf), "--repo", git_server.url(), "--ref", "main", "--detach")
    assert res.returncode == 0, res.stderr
    pid = res.stdout.strip()
    pool = harness.pool()
    deadline = time.monotonic() + 60
    while {j.key: j.state for j in pool.pipeline(pid)[1]}["slow"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    after = next(j for j in pool.pipeline(pid)[1] if j.key == "after")
    explained = harness.cli("explain", after.id).stdout
    assert "is blocked: its needs are still running: slow (running)" in explained
    assert harness.cli("pipeline", "cancel", pid).returncode == 0
    deadline = time.monotonic() + 60
    while pool.pipeline(pid)[0].state == "running":
        assert time.monotonic() < deadline, pool.pipeline(pid)
        time.sleep(0.2)
    row, jobs = pool.pipeline(pid)
    assert row.state == "cancelled"
    assert {j.key: j.state for j in jobs} == {
        "slow": "cancelled",
        "after": "cancelled",
        "cleanup": "succeeded",
        "on-cancel": "succeeded",
        "guarded": "skipped",
    }
    cleanup = next(j for j in jobs if j.key == "cleanup")
    assert "cleaning after cancelled" in pool.store.read_log(cleanup.id).splitlines()


def test_checkout_with_ref_checks_out_that_commit(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    bare = git_server.base / "checkout-ref.git"
    tagged = make_repo(bare, {"which.txt": "tagged\n"}, message="tagged")
    branched = make_repo(bare, {"which.txt": "branched\n"}, message="branched")
    tip = make_repo(bare, {"which.txt": "tip\n"}, message="tip")
    subprocess.run(["git", "-C", str(bare), "tag", "v1", tagged], check=True)
    subprocess.run(["git", "-C", str(bare), "branch", "release", branched], check=True)
    wf = tmp_path / "refs.yml"
    show = '      - run: echo "content=$(cat which.txt) sha=$CI_POOL_COMMIT_SHA"\n'
    wf.write_text(
        "name: refs\non: push\njobs:\n"
        "  tag:\n    runs-on: linux\n    steps:\n"
        "      - uses: actions/checkout@v4\n        with:\n          ref: v1\n" + show
        + "  branch:\n    runs-on: linux\n    steps:\n"
        "      - uses: actions/checkout@v4\n        with:\n          ref: release\n" + show
        + "  plain:\n    runs-on: linux\n    steps:\n      - uses: actions/checkout@v4\n" + show
    )  # fmt: skip
    res = harness.cli(
        "run", str(wf), "--repo", git_server.url("checkout-ref.git"), "--ref", "main", timeout=240
    )
    assert "Traceback" not in res.stderr, res.stderr
    pipe = pipeline_json(harness, res.stderr.split()[1].rstrip(":"))
    assert res.returncode == 0, pipe
    jobs = {j["key"]: j for j in pipe["jobs"]}
    store = harness.pool().store
    logs = {key: store.read_log(job["id"]).splitlines() for key, job in jobs.items()}
    assert f"content=tagged sha={tagged}" in logs["tag"], logs["tag"]
    assert f"content=branched sha={branched}" in logs["branch"], logs["branch"]
    assert f"content=tip sha={tip}" in logs["plain"], logs["plain"]
    url = git_server.url("checkout-ref.git")
    assert f"##[ci-pool] checkout {url} {tagged}" in logs["tag"]
