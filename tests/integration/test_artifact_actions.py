"""The built-in ``actions/upload-artifact``/``download-artifact`` and ``actions/cache``
across the jobs of a pipeline on two workers (real Redis, Celery workers, Docker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GitServer, Harness, Worker

pytestmark = pytest.mark.integration


def run_workflow(h: Harness, git: GitServer, path: Path, ref: str = "main") -> dict[str, Any]:
    res = h.cli("run", str(path), "--repo", git.url(), "--ref", ref, timeout=240)
    assert "Traceback" not in res.stderr, res.stderr
    pid = res.stderr.split()[1].rstrip(":")
    show = h.cli("pipeline", "show", pid, "--json")
    assert show.returncode == 0, show.stderr
    pipe: dict[str, Any] = json.loads(show.stdout)
    pipe["exit"] = res.returncode
    return pipe


def job_show(h: Harness, job_id: str) -> dict[str, Any]:
    res = h.cli("show", job_id, "--json")
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout)
    return out


PASS_FILES = """\
name: pass-files
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: |
          mkdir -p dist/sub deps/lib
          echo hello > dist/app.txt; echo deep > dist/sub/b.txt; echo noise > dist/x.log
          echo "built lib $RANDOM" > deps/lib/out.txt
      - uses: actions/upload-artifact@v4
        id: up
        with:
          name: bundle
          path: |
            dist/
            !dist/*.log
      - uses: actions/upload-artifact@v4
        with:
          name: empty
          path: nothing-here/
          if-no-files-found: warn
      - run: echo "artifact id ${{ steps.up.outputs.artifact-id }}"
  use:
    needs: build
    runs-on: android
    steps:
      - uses: actions/download-artifact@v4
        id: down
        with:
          name: bundle
          path: got
      - run: |
          cat got/app.txt got/sub/b.txt
          test ! -e got/x.log && echo "no log file"
          echo "download path ${{ steps.down.outputs.download-path }}"
"""


def test_job_a_uploads_job_b_downloads_on_another_worker(
    harness: Harness,
    git_server: GitServer,
    linux_worker: Worker,
    android_worker: Worker,
    tmp_path: Path,
) -> None:
    wf = tmp_path / "pass.yml"
    wf.write_text(PASS_FILES)
    pipe = run_workflow(harness, git_server, wf)
    jobs = {j["key"]: j for j in pipe["jobs"]}
    store = harness.pool().store
    assert pipe["exit"] == 0, [store.read_log(j["id"]) for j in jobs.values()]
    assert jobs["build"]["runner_id"] == linux_worker.runner_id
    assert jobs["use"]["runner_id"] == android_worker.runner_id
    build_log = store.read_log(jobs["build"]["id"]).splitlines()
    assert "artifact bundle: 2 files, 11 bytes uploaded" in build_log
    assert f"artifact id {jobs['build']['id']}/1/bundle" in build_log
    assert any(
        "##[warning]No files were found with the provided path: nothing-here/" in line
        for line in build_log
    )
    use_log = store.read_log(jobs["use"]["id"]).splitlines()
    assert ["hello", "deep", "no log file"] == [
        line for line in use_log if line in ("hello", "deep", "no log file")
    ]
    assert "download path /workspace/got" in use_log
    shown = job_show(harness, jobs["build"]["id"])
    assert sorted(a["path"] for a in shown["artifacts"]) == ["bundle/app.txt", "bundle/sub/b.txt"]
    assert {e["path"] for e in shown["evidence"]["artifacts"]} == {
        "bundle/app.txt",
        "bundle/sub/b.txt",
    }
    fetched = harness.cli("artifacts", jobs["build"]["id"], "--dest", str(tmp_path / "out"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "out" / "bundle" / "sub" / "b.txt").read_text() == "deep\n"
