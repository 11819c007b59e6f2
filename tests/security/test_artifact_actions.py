"""The built-in artifact actions at the job boundary: names and paths from the workflow
cannot leave the workspace or the artifact store, and a download never follows a
symlink the job planted (real Redis, Celery worker, Docker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def test_stored_artifact_paths_that_leave_the_workspace_are_refused(tmp_path: Path) -> None:
    """A tampered artifact index (a path with ``..`` or an absolute one) writes nothing."""
    import hashlib
    from types import SimpleNamespace

    from ci_pool.exceptions import ActionError
    from ci_pool.settings import Settings
    from ci_pool.worker.actions.artifact_actions import _write_artifact
    from ci_pool.worker.jobfiles import JobDir

    settings = Settings(home=tmp_path, artifact_root=tmp_path / "store")
    stored = tmp_path / "store" / "j1" / "1" / "good"
    stored.mkdir(parents=True)
    (stored / "a.txt").write_bytes(b"hi\n")
    (tmp_path / "store" / "j1" / "1" / "evil.txt").write_bytes(b"hi\n")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    from ci_pool.store import Store

    store = Store(f"sqlite:///{tmp_path / 's.db'}")  # files come from the artifact root
    call: Any = SimpleNamespace(
        att=SimpleNamespace(settings=settings), files=SimpleNamespace(store=store)
    )
    sha = hashlib.sha256(b"hi\n").hexdigest()

    def row(path: str) -> Any:
        return SimpleNamespace(path=path, job_id="j1", attempt=1, size=3, sha256=sha)

    with JobDir(workspace) as wdir:
        assert _write_artifact(call, wdir, [row("good/a.txt")], "good", "out") == 3
        for path in ("good/../evil.txt", "/good/a.txt", "other/a.txt", "good"):
            with pytest.raises(ActionError, match="is refused"):
                _write_artifact(call, wdir, [row(path)], "good", "out2")
        with pytest.raises(ActionError, match="does not match its sha256"):
            _write_artifact(
                call,
                wdir,
                [SimpleNamespace(**{**vars(row("good/a.txt")), "sha256": "0" * 64})],
                "good",
                "out3",
            )
    assert (workspace / "out" / "a.txt").read_text() == "hi\n"
    assert not (workspace / "out2").exists()
    store.close()
