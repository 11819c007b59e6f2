"""The built-in ``actions/upload-artifact``/``download-artifact`` and ``actions/cache``
across the jobs of a pipeline on two workers (real Redis, Celery workers, Docker)."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import timedelta
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
      - uses: actions/cache@v4
        id: cache
        with:
          path: deps
          key: deps-${{ github.run_id }}
      - run: echo "build cache-hit=${{ steps.cache.outputs.cache-hit }}"
  use:
    needs: build
    runs-on: android
    steps:
      - uses: actions/download-artifact@v4
        id: down
        with:
          name: bundle
          path: got
      - uses: actions/cache/restore@v4
        id: exact
        with:
          path: deps
          key: deps-${{ github.run_id }}
      - run: |
          echo "exact hit=${{ steps.exact.outputs.cache-hit }}"
          cat deps/lib/out.txt
          rm -rf deps
      - uses: actions/cache/restore@v4
        id: prefix
        with:
          path: deps
          key: deps-other
          restore-keys: |
            nothing-
            deps-
      - run: |
          echo "prefix hit=${{ steps.prefix.outputs.cache-hit }}" \
            "matched=${{ steps.prefix.outputs.cache-matched-key }}"
          cat deps/lib/out.txt
      - uses: actions/cache/restore@v4
        id: miss
        with:
          path: deps
          key: absent-${{ github.run_id }}
      - run: |
          echo "miss hit=${{ steps.miss.outputs.cache-hit }}" \
            "matched=[${{ steps.miss.outputs.cache-matched-key }}]"
      - uses: actions/download-artifact@v4
        with:
          pattern: bun*
          path: all
      - run: |
          cat got/app.txt got/sub/b.txt
          cat all/bundle/sub/b.txt
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
    pid = pipe["id"]
    # The first run misses; the post step saves the directory after the job's steps.
    assert "build cache-hit=false" in build_log
    assert f"Cache not found for input keys: deps-{pid}" in build_log
    saved = [line for line in build_log if line.startswith(f"Cache saved with key: deps-{pid} ")]
    assert saved and "1 files" in saved[0] and "zstd" in saved[0]
    assert build_log.index("##[step] post cache deps-" + pid) > build_log.index(
        "build cache-hit=false"
    )
    assert any(
        "##[warning]No files were found with the provided path: nothing-here/" in line
        for line in build_log
    )
    use_log = store.read_log(jobs["use"]["id"]).splitlines()
    built = [line for line in use_log if line.startswith("built lib ")]
    assert len(built) == 2 and built[0] == built[1]  # restored by key, then by prefix
    assert "exact hit=true" in use_log
    assert f"prefix hit=false matched=deps-{pid}" in use_log
    assert "miss hit=false matched=[]" in use_log
    assert ["hello", "deep", "deep", "no log file"] == [
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


SCOPED = """\
name: scoped
on: push
jobs:
  c:
    runs-on: linux
    steps:
      - run: mkdir -p out && echo "from $GITHUB_REF_NAME" > out/where.txt
      - uses: actions/cache/save@v4
        with: {path: out, key: "scope-${{ github.ref_name }}-KEY"}
      - uses: actions/cache/restore@v4
        id: other
        with: {path: out, key: "scope-OTHER-KEY"}
      - run: echo "restored hit=${{ steps.other.outputs.cache-hit }}"; cat out/where.txt
"""


def test_cache_scopes_a_branch_sees_main_and_main_does_not_see_the_branch(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    from ci_pool.embedded import make_repo

    tag = tmp_path.name[-12:].replace("_", "-")
    make_repo(git_server.base / f"scoped-{tag}.git", {"README": "scoped\n"})
    subprocess.run(
        ["git", "-C", str(git_server.base / f"scoped-{tag}.git"), "branch", "feature", "main"],
        check=True,
    )
    url = git_server.url(f"scoped-{tag}.git")

    def run(ref: str, other: str) -> list[str]:
        wf = tmp_path / f"{ref}.yml"
        wf.write_text(SCOPED.replace("KEY", tag).replace("OTHER", other))
        res = harness.cli("run", str(wf), "--repo", url, "--ref", ref, timeout=240)
        assert "Traceback" not in res.stderr, res.stderr
        pid = res.stderr.split()[1].rstrip(":")
        job = harness.pool().store.pipeline_jobs(pid)[0]
        return harness.pool().store.read_log(job.id).splitlines()

    # main saves; the feature branch restores main's entry (the default branch).
    main_log = run("main", "nothing")
    assert f"Cache saved with key: scope-main-{tag}" in " ".join(main_log)
    feature_log = run("feature", "main")
    assert "restored hit=true" in feature_log, feature_log
    assert f"Cache restored from key: scope-main-{tag} (1 files, 10 bytes)" in feature_log
    assert "from main" in feature_log  # main's file replaced the one the job wrote
    # main does not see what the feature branch saved.
    main_again = run("main", "feature")
    assert "restored hit=false" in main_again
    assert f"Cache not found for input keys: scope-feature-{tag}" in main_again
    assert "from main" in main_again


RETAINED = """\
name: retained
on: push
jobs:
  make:
    runs-on: linux
    steps:
      - run: echo kept > f.txt
      - uses: actions/upload-artifact@v4
        with: {name: short, path: f.txt, retention-days: 400}
  use:
    needs: make
    runs-on: android
    steps:
      - uses: actions/download-artifact@v4
        with: {name: short, path: got}
      - run: cat got/f.txt; exit 1
"""


def test_an_expired_artifact_is_removed_and_says_expired(
    harness: Harness,
    git_server: GitServer,
    linux_worker: Worker,
    android_worker: Worker,
    tmp_path: Path,
) -> None:
    from sqlalchemy import update

    from ci_pool.store.artifact_sets import ArtifactSet
    from ci_pool.store.models import utcnow

    wf = tmp_path / "retained.yml"
    wf.write_text(RETAINED)
    pipe = run_workflow(harness, git_server, wf)
    jobs = {j["key"]: j for j in pipe["jobs"]}
    store = harness.pool().store
    make, use = jobs["make"]["id"], jobs["use"]["id"]
    assert jobs["make"]["state"] == "succeeded", store.read_log(make)
    assert "kept" in store.read_log(use).splitlines()  # downloaded while kept
    # retention-days is cut to the pool's most (90 by default)
    kept = [line for line in store.read_log(make).splitlines() if line.startswith("kept ")]
    assert kept and kept[0].startswith("kept 90 day(s), until "), kept
    files = harness.settings().resolved_artifact_root / make / "1" / "short"
    assert (files / "f.txt").read_text() == "kept\n"

    with store.session() as s:  # its retention ends
        s.execute(
            update(ArtifactSet)
            .where(ArtifactSet.job_id == make)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    beat = harness.cli("beat", "--once")
    assert beat.returncode == 0, beat.stderr
    assert re.search(r"[1-9]\d* expired artifact\(s\) removed", beat.stderr), beat.stderr
    assert not files.exists()

    shown = harness.cli("show", make)
    assert "expired artifacts" in shown.stdout and "short  attempt 1  expired" in shown.stdout
    view = job_show(harness, make)
    assert view["artifacts"] == [] and [e["name"] for e in view["expired_artifacts"]] == ["short"]
    fetched = harness.cli("artifacts", make, "--dest", str(tmp_path / "out"))
    assert fetched.returncode == 2 and f"the artifacts of job {make} expired" in fetched.stderr

    again = harness.cli("retry", use, timeout=240)  # its download now finds it expired
    assert again.returncode != 0
    log = store.read_log(use)
    assert "artifact 'short' expired: its retention ended and it was removed" in log, log
