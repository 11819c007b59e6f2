"""The built-in artifact actions at the job boundary: names and paths from the workflow
cannot leave the workspace or the artifact store, and a download never follows a
symlink the job planted (real Redis, Celery worker, Docker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import GitServer, Harness, Worker

pytestmark = pytest.mark.integration

ATTACKS = """\
name: artifact-attacks
on: push
jobs:
  a:
    runs-on: linux
    steps:
      - run: mkdir -p f && echo hi > f/a.txt && ln -s /etc/passwd pw && ln -s OUTSIDE got
      - uses: actions/upload-artifact@v4
        continue-on-error: true
        with: {name: "../../escape", path: f}
      - uses: actions/upload-artifact@v4
        continue-on-error: true
        with: {name: abs, path: /etc/passwd}
      - uses: actions/upload-artifact@v4
        continue-on-error: true
        with: {name: dots, path: "f/../../.."}
      - uses: actions/upload-artifact@v4
        continue-on-error: true
        with: {name: link, path: pw, if-no-files-found: error}
      - uses: actions/upload-artifact@v4
        with: {name: good, path: f}
      - uses: actions/upload-artifact@v4
        continue-on-error: true
        with: {name: good, path: f}
      - uses: actions/download-artifact@v4
        continue-on-error: true
        with: {name: good, path: got}
      - uses: actions/download-artifact@v4
        continue-on-error: true
        with: {name: good, path: ../../tmp}
"""


def test_artifact_names_paths_and_planted_links_are_refused(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    outside = harness.root / f"outside-{tmp_path.name[-10:]}"
    outside.mkdir()
    wf = tmp_path / "attacks.yml"
    wf.write_text(ATTACKS.replace("OUTSIDE", str(outside)))
    res = harness.cli("run", str(wf), "--repo", git_server.url(), "--ref", "main", timeout=240)
    assert "Traceback" not in res.stderr, res.stderr
    pid = res.stderr.split()[1].rstrip(":")
    job = harness.pool().store.pipeline_jobs(pid)[0]
    log = harness.pool().store.read_log(job.id)
    assert res.returncode == 0, log  # every refused step is continue-on-error
    errors = [line for line in log.splitlines() if line.startswith("##[error]")]
    assert len(errors) == 7, errors
    assert "input name: '../../escape' is not a valid artifact name" in errors[0]
    assert "input path: '/etc/passwd' is outside the workspace" in errors[1]
    assert "must not contain '..'" in errors[2]
    assert "No files were found with the provided path: pw" in errors[3]
    assert "##[warning]pw: is a symbolic link, not a regular file; not collected" in log
    assert "an artifact named 'good' was already uploaded in this run" in errors[4]
    assert "got is not a directory (symlinks are not followed)" in errors[5]
    assert "input path: '../../tmp' must not contain '..'" in errors[6]
    assert list(outside.iterdir()) == []
    shown = json.loads(harness.cli("show", job.id, "--json").stdout)
    assert [a["path"] for a in shown["artifacts"]] == ["good/a.txt"]
