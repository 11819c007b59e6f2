"""Checkout steps end to end on real Redis, a Celery worker, Docker and the loopback git
daemon: several checkouts per job, each at its place among the steps, another repository
by owner/name, ``path:``, a ``ref:`` expression, ``filter:`` and ``sparse-checkout``; and the
fences around them (git_hosts, symlinked paths, persisted credentials)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from ci_pool.embedded import make_repo
from ci_pool.exceptions import InputError
from ci_pool.service.pool import Pool
from ci_pool.settings import load_settings
from tests.conftest import (
    GitServer,
    Harness,
    RedisServer,
    Worker,
    isolated_harness,
    workspaces_left,
)

pytestmark = pytest.mark.integration

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@localhost",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@localhost",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def branch(bare: Path, name: str, files: dict[str, str]) -> None:
    """Add branch ``name`` (from main) with ``files`` changed to a repo made by make_repo."""
    work = bare.parent / (bare.name + ".branch")

    def git(*args: str) -> None:
        subprocess.run(["git", *args], env=GIT_ENV, check=True, capture_output=True)

    git("clone", "-q", "-b", "main", str(bare), str(work))
    git("-C", str(work), "checkout", "-q", "-b", name)
    for rel, content in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(content)
    git("-C", str(work), "add", "-A")
    git("-C", str(work), "commit", "-q", "-m", name)
    git("-C", str(work), "push", "-q", "origin", name)


@pytest.fixture(scope="module")
def repos(git_server: GitServer) -> dict[str, str]:
    """co/app (main, release) and co/lib (main, release) on the loopback git daemon."""
    base = git_server.base / "co"
    base.mkdir(exist_ok=True)
    make_repo(base / "app.git", {"README": "app main\n"})
    branch(base / "app.git", "release", {"README": "app release\n"})
    lib = {"lib.txt": "lib main\n", "docs/a.md": "docs main\n", "src/x.c": "int x;\n"}
    make_repo(base / "lib.git", lib)
    branch(base / "lib.git", "release", {"lib.txt": "lib release\n", "docs/a.md": "docs rel\n"})
    return {"app": git_server.url("co/app.git"), "lib": git_server.url("co/lib.git")}


def run(h: Harness, repo: str, wf: Path, ref: str = "release") -> tuple[int, dict[str, Any], str]:
    """``ci-pool run`` of a workflow; its exit code, the pipeline and its one job's log."""
    res = h.cli("run", str(wf), "--repo", repo, "--ref", ref, timeout=240)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("pipeline "), res.stderr
    pid = res.stderr.split()[1].rstrip(":")
    shown = h.cli("pipeline", "show", pid, "--json")
    assert shown.returncode == 0, shown.stderr
    pipe = json.loads(shown.stdout)
    return res.returncode, pipe, h.pool().store.read_log(pipe["jobs"][0]["id"])


TWO_CHECKOUTS = """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: echo "entries before any checkout=$(ls -A | wc -l)"
      - uses: actions/checkout@v4
      - run: cat README
      - name: Library docs
        uses: actions/checkout@v4
        with:
          repository: co/lib
          path: deps/lib
          ref: ${{ github.ref }}
          filter: blob:none
          sparse-checkout: docs
      - run: |
          cat deps/lib/lib.txt deps/lib/docs/a.md README
          test -e deps/lib/src || echo "no src in the sparse checkout"
"""


def test_two_checkouts_each_at_its_place_with_path_ref_filter_and_sparse(
    harness: Harness, linux_worker: Worker, repos: dict[str, str], tmp_path: Path
) -> None:
    wf = tmp_path / "two.yml"
    wf.write_text(TWO_CHECKOUTS)
    code, pipe, log = run(harness, repos["app"], wf)
    assert code == 0, log
    assert pipe["jobs"][0]["state"] == "succeeded"
    # The first step ran before anything was checked out.
    assert "entries before any checkout=0" in log
    # The job's own repository at the pipeline's ref; the library at the ref the expression
    # names (release, not its default branch), only the sparse directory of it.
    assert "app release" in log and "app main" not in log
    assert "lib release" in log and "docs rel" in log
    assert "no src in the sparse checkout" in log
    assert "##[step] 4 Library docs" in log
    assert f"checkout {repos['lib']} " in log and "into deps/lib" in log
    assert "sparse checkout: docs" in log


def test_a_symlinked_checkout_path_is_refused_and_not_followed(
    harness: Harness, linux_worker: Worker, repos: dict[str, str], tmp_path: Path
) -> None:
    """A step may leave a symlink where a later checkout's path leads; the runner must not
    write through it (to the host, outside the workspace)."""
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o777)
    outside.chmod(0o777)
    wf = tmp_path / "link.yml"
    wf.write_text(
        "on: push\njobs:\n  build:\n    runs-on: linux\n    steps:\n"
        f"      - run: ln -s {outside} deps\n"
        "      - uses: actions/checkout@v4\n        with: {repository: co/lib, path: deps/lib}\n"
        "      - run: echo reached-$((1+2))\n"
    )
    code, pipe, log = run(harness, repos["app"], wf)
    assert code == 1, log
    assert pipe["jobs"][0]["state"] == "failed"
    assert "checkout refused: path 'deps/lib': deps is a symlink" in log
    assert "reached-3" not in log
    assert list(outside.iterdir()) == []


def test_a_repository_outside_git_hosts_is_refused_before_anything_is_written(
    harness: Harness, repos: dict[str, str]
) -> None:
    settings = load_settings(
        harness.config,
        broker_url=harness.redis_url,
        home=harness.root / "home",
        **{**harness.overrides, "git_hosts": ["127.0.0.1"]},
    )
    pool = Pool(settings)

    def pipelines() -> int:
        with pool.store.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM pipelines")).scalar_one())

    before = pipelines()
    wf = (
        "on: push\njobs:\n  build:\n    runs-on: linux\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "        with: {repository: 'https://git.example.net/org/x.git'}\n"
        "      - run: 'true'\n"
    )
    with pytest.raises(InputError) as err:
        pool.submit_pipeline(wf, "wf.yml", repos["app"], "main")
    assert err.value.field == "jobs.build.steps[0].with.repository"
    assert "git.example.net:443 is not in the git_hosts setting" in str(err.value)
    assert pipelines() == before


TOKEN = "ck-persisted-9f2e61d0a7"


@pytest.fixture(scope="module")
def credential_pool(
    session_dir: Path, redis_server: RedisServer, busybox_image: str, git_server: GitServer
) -> Iterator[Harness]:
    """A pool whose git credential is configured for the loopback git server's URLs."""
    secret = session_dir / "ck-git-token"
    secret.write_text(f"ci-bot:{TOKEN}\n")
    prefix = git_server.url("").rstrip("/") + "/"
    h = isolated_harness(session_dir / "ck-creds", redis_server, busybox_image, 11)
    with h.config.open("a") as config:
        config.write(f'\n[git_credentials]\n"{prefix}" = "file:{secret}"\n')
    h.start_worker("linux")
    yield h
    h.stop()


def test_persisted_credentials_are_masked_job_scoped_and_gone_after_the_job(
    credential_pool: Harness, repos: dict[str, str], tmp_path: Path
) -> None:
    h = credential_pool
    wf = tmp_path / "creds.yml"
    wf.write_text(
        "on: push\njobs:\n  build:\n    runs-on: linux\n    steps:\n"
        "      - uses: actions/checkout@v4\n        with: {path: plain}\n"
        "      - uses: actions/checkout@v4\n"
        "        with: {path: kept, persist-credentials: true}\n"
        "      - run: |\n"
        '          echo "plain helpers: $(grep -c helper plain/.git/config)"\n'
        "          helper=$(sed -n 's/.*helper = //p' kept/.git/config)\n"
        '          echo "kept helper: $helper"\n'
        '          file=$(echo "$helper" | sed "s/.*cat \'\\([^\']*\\)\'.*/\\1/")\n'
        '          echo "credential file: $(cat "$file" | tr "\\n" " ")"\n'
    )
    code, pipe, log = run(h, repos["app"], wf)
    assert code == 0, log
    assert "plain helpers: 0" in log
    assert 'kept helper: "!f() { test' in log and "git-credential-2" in log
    # The job could read its credential; the log shows it masked.
    assert "credential file: username=ci-bot password=***" in log
    assert TOKEN not in log
    # Nothing of the attempt is left on the runner, and the store never held the token.
    job_id = pipe["jobs"][0]["id"]
    workspaces = h.settings().resolved_workspace_root
    assert not workspaces_left(workspaces, job_id)
    assert not list(workspaces.rglob("git-credential-*"))
    store_file = h.root / "home"
    for path in store_file.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert TOKEN.encode() not in path.read_bytes(), path


def test_run_name_permissions_and_environment_are_recorded_and_shown(
    harness: Harness, linux_worker: Worker, repos: dict[str, str], tmp_path: Path
) -> None:
    wf = tmp_path / "recorded.yml"
    wf.write_text(
        "name: deploy\nrun-name: Deploy ${{ github.ref }} on ${{ github.event_name }}\n"
        "permissions: read-all\non: push\njobs:\n  ship:\n    runs-on: linux\n"
        "    permissions: {contents: write, id-token: none}\n"
        "    environment: {name: production, url: 'https://example.org/[app]'}\n"
        "    steps:\n      - uses: actions/checkout@v4\n      - run: cat README\n"
    )
    code, pipe, log = run(harness, repos["app"], wf)
    assert code == 0, log
    assert pipe["run_name"] == "Deploy refs/heads/release on push"
    assert pipe["name"] == "deploy" and pipe["permissions"] == {"*": "read"}
    job_id = pipe["jobs"][0]["id"]
    shown = harness.cli("show", job_id, "--json")
    data = json.loads(shown.stdout)
    assert data["permissions"] == {"contents": "write", "id-token": "none"}
    assert data["environment"] == {"name": "production", "url": "https://example.org/[app]"}
    text = harness.cli("show", job_id).stdout
    assert "scopes     contents: write, id-token: none" in text
    assert "deploys to production (https://example.org/[app])" in text
    table = harness.cli("pipeline", "show", pipe["id"]).stdout
    assert "Deploy refs/heads/release on push" in table
