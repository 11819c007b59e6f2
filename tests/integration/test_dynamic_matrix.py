"""A matrix computed by an earlier job, end to end on a real Celery worker, Redis and
Docker: ``plan`` writes a JSON list to an output, ``build`` runs one cell per value, and the
job after it sees ``needs.build.result``; an output that is not JSON fails ``build`` with
the reason ``ci-pool pipeline show`` prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GitServer, Harness, Worker

pytestmark = pytest.mark.integration

WORKFLOW = """\
name: dynamic
on: push
jobs:
  plan:
    runs-on: linux
    outputs:
      targets: ${{ steps.list.outputs.targets }}
    steps:
      - id: list
        run: echo 'targets=TARGETS' >> "$GITHUB_OUTPUT"
  build:
    needs: plan
    runs-on: linux
    strategy:
      matrix:
        target: ${{ fromJSON(needs.plan.outputs.targets) }}
    steps:
      - run: echo "building for ${{ matrix.target }} as ${{ strategy.job-index }}"
  final:
    needs: build
    if: always()
    runs-on: linux
    steps:
      - run: echo "build result ${{ needs.build.result }}"
"""


def run(h: Harness, git: GitServer, tmp_path: Path, output: str) -> tuple[int, dict[str, Any]]:
    wf = tmp_path / "dynamic.yml"
    wf.write_text(WORKFLOW.replace("TARGETS", output))
    res = h.cli("run", str(wf), "--repo", git.url(), "--ref", "main", timeout=240)
    assert "Traceback" not in res.stderr, res.stderr
    pid = res.stderr.split()[1].rstrip(":")
    shown = h.cli("pipeline", "show", pid, "--json")
    assert shown.returncode == 0, shown.stderr
    return res.returncode, json.loads(shown.stdout)


def test_a_matrix_from_a_job_output_runs_one_cell_per_value(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    code, pipe = run(harness, git_server, tmp_path, '["amd64","arm64","riscv64"]')
    jobs = {j["key"]: j for j in pipe["jobs"]}
    assert code == 0, [(k, j["state"], j["reason"], j["outputs"]) for k, j in jobs.items()]
    assert pipe["state"] == "succeeded"
    cells = ["build (amd64)", "build (arm64)", "build (riscv64)"]
    assert sorted(jobs) == sorted(["plan", "final", *cells])
    store = harness.pool().store
    for i, key in enumerate(cells):
        assert jobs[key]["state"] == "succeeded", jobs[key]
        log = store.read_log(jobs[key]["id"]).splitlines()
        assert f"building for {key[7:-1]} as {i}" in log
        assert jobs[key]["finished_at"] <= jobs["final"]["started_at"]
    assert "build result success" in store.read_log(jobs["final"]["id"]).splitlines()


def test_an_output_that_is_not_json_fails_the_job_with_the_reason_shown(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    code, pipe = run(harness, git_server, tmp_path, "[amd64")
    jobs = {j["key"]: j for j in pipe["jobs"]}
    assert code == 1, pipe
    assert pipe["state"] == "failed"
    assert jobs["build"]["state"] == "failed"
    assert "needs.plan.outputs.targets" in jobs["build"]["reason"]
    assert "is not JSON" in jobs["build"]["reason"]
    assert jobs["final"]["state"] == "succeeded"
    store = harness.pool().store
    assert "build result failure" in store.read_log(jobs["final"]["id"]).splitlines()
    table = harness.cli("pipeline", "show", pipe["id"]).stdout
    assert "the matrix is not valid" in table and "is not JSON" in table
