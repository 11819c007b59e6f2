"""Actions end to end on a real worker (busybox in Docker): repository actions fetched from
``actions_url`` (the test git server on loopback) by tag and by SHA, exactly as public
actions are named; composite actions, local and nested, with inputs, outputs, the action's
path and its environment files; the commits in the evidence; the runner's action cache
reused by a later job; and the clear failures: an unknown ref, a repository without
action.yml, composite actions nested too deep, a non-SHA pin on ``deploy``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ci_pool.embedded import make_repo
from tests.conftest import GitServer, Harness, Worker

pytestmark = pytest.mark.integration

SETUP_THING = """\
name: setup thing
inputs:
  version:
    description: the version to set up
    default: "1.0"
  flavour:
    default: plain
outputs:
  where:
    value: ${{ steps.install.outputs.where }}
  flavour:
    value: ${{ inputs.flavour }}-${{ steps.greet.outputs.greeting }}
runs:
  using: composite
  steps:
    - id: install
      shell: sh
      run: |
        echo "install v${{ inputs.version }} from ${{ github.action_path }}"
        test "$GITHUB_ACTION_PATH" = "${{ github.action_path }}" && echo "action path agrees"
        cat "$GITHUB_ACTION_PATH/data.txt"
        echo "where=/opt/thing-${{ inputs.version }}" >> "$GITHUB_OUTPUT"
        echo "$GITHUB_ACTION_PATH/bin" >> "$GITHUB_PATH"
        echo "THING_HOME=/opt/thing" >> "$GITHUB_ENV"
        if touch "$GITHUB_ACTION_PATH/data.txt" 2>/dev/null; then echo "action files writable"; fi
    - if: ${{ inputs.version == 'never' }}
      shell: sh
      run: echo "a skipped step ran"
    - id: greet
      uses: someorg/pinned-thing/greeter@{pinned}
      with:
        who: ${{ inputs.flavour }}
"""

GREETER = """\
name: greeter
inputs:
  who:
    required: true
outputs:
  greeting:
    value: ${{ steps.say.outputs.greeting }}
runs:
  using: composite
  steps:
    - id: say
      shell: sh
      run: |
        echo "greeter sees THING_HOME=$THING_HOME step-env=$STEP_ENV"
        echo "greeting=hello-${{ inputs.who }}" >> "$GITHUB_OUTPUT"
"""

LOCAL = """\
name: local
inputs:
  name:
    default: nobody
outputs:
  msg:
    value: ${{ steps.m.outputs.msg }}
runs:
  using: composite
  steps:
    - id: m
      shell: sh
      working-directory: sub
      run: |
        echo "local in $(basename "$PWD") for ${{ inputs.name }}"
        echo "msg=hi-${{ inputs.name }}" >> "$GITHUB_OUTPUT"
"""

LOOP = """\
name: loop
runs:
  using: composite
  steps:
    - uses: ./.ci/actions/loop
"""

WORKFLOW = """\
on: push
jobs:
  use:
    runs-on: linux
    steps:
      - uses: actions/checkout@v4
      - id: setup
        uses: someorg/setup-thing@v1
        env:
          STEP_ENV: from-the-step
        with:
          version: "2.5"
          flavour: spicy
      - run: |
          echo "where=${{ steps.setup.outputs.where }} flavour=${{ steps.setup.outputs.flavour }}"
          echo "tool says $(thing-tool.sh) home=$THING_HOME ctx=${{ env.THING_HOME }}"
      - id: local
        uses: ./.ci/actions/x
        with:
          name: local-user
      - run: echo "local=${{ steps.local.outputs.msg }}"
"""

FAILING = """\
on: push
jobs:
  unknown-ref:
    runs-on: linux
    steps:
      - uses: someorg/setup-thing@v9
  no-action:
    runs-on: linux
    steps:
      - uses: someorg/not-an-action@main
  too-deep:
    runs-on: linux
    steps:
      - uses: actions/checkout@v4
      - uses: ./.ci/actions/loop
"""


def git(*args: str) -> str:
    env = {
        **os.environ,
        "GIT_COMMITTER_NAME": "ci-pool",
        "GIT_COMMITTER_EMAIL": "ci-pool@localhost",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    proc = subprocess.run(["git", *args], env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def actions(git_server: GitServer) -> dict[str, str]:
    """The action repositories on the forge, and the app repository using them."""
    base = git_server.base
    pinned = make_repo(base / "someorg" / "pinned-thing.git", {"greeter/action.yml": GREETER})
    setup_repo = base / "someorg" / "setup-thing.git"
    setup = make_repo(
        setup_repo,
        {
            "action.yml": SETUP_THING.replace("{pinned}", pinned),
            "data.txt": "data from the action\n",
            "bin/thing-tool.sh": "#!/bin/sh\necho thing-tool-ok\n",
        },
    )
    git("-C", str(setup_repo), "tag", "-a", "v1", "-m", "v1", setup)
    make_repo(base / "someorg" / "not-an-action.git", {"README.md": "no action here\n"})
    app = make_repo(
        base / "acme" / "uses-actions.git",
        {
            ".ci/actions/x/action.yml": LOCAL,
            ".ci/actions/loop/action.yml": LOOP,
            "sub/keep.txt": "x\n",
        },
    )
    return {"pinned": pinned, "setup": setup, "app": app}


def run(h: Harness, git_server: GitServer, wf: Path) -> tuple[int, dict[str, Any]]:
    res = h.cli(
        "run", str(wf), "--repo", git_server.url("acme/uses-actions.git"), "--ref", "main",
        timeout=240,
    )  # fmt: skip
    assert "Traceback" not in res.stderr, res.stderr
    pid = res.stderr.split()[1].rstrip(":")
    store = h.pool().store
    return res.returncode, {r.key: r for r in store.pipeline_jobs(pid)}


def test_actions_from_actions_url_run_as_written_and_are_cached_by_commit(
    harness: Harness,
    linux_worker: Worker,
    git_server: GitServer,
    actions: dict[str, str],
    tmp_path: Path,
) -> None:
    wf = tmp_path / "use.yml"
    wf.write_text(WORKFLOW)
    code, jobs = run(harness, git_server, wf)
    store = harness.pool().store
    job = jobs["use"]
    log = store.read_log(job.id)
    assert code == 0, log
    lines = set(log.splitlines())
    setup, pinned = actions["setup"], actions["pinned"]
    # Fetched from the forge by tag and by SHA (the nested one), each at its commit.
    assert f"action someorg/setup-thing@v1: {setup} (fetched)" in lines, log
    assert f"action someorg/pinned-thing/greeter@{pinned}: {pinned} (fetched)" in lines
    # Inputs, the action's own files and path (read-only to the job), outputs, env, path.
    in_job = next(x for x in lines if x.startswith("install v2.5 from "))
    assert in_job.endswith(f"/actions/{setup}"), in_job
    assert "action path agrees" in lines
    assert "data from the action" in lines
    assert "action files writable" not in lines
    assert "a skipped step ran" not in lines
    assert "greeter sees THING_HOME=/opt/thing step-env=from-the-step" in lines
    assert "where=/opt/thing-2.5 flavour=spicy-hello-spicy" in lines
    assert "tool says thing-tool-ok home=/opt/thing ctx=/opt/thing" in lines
    # A local composite action from the checked-out workspace.
    assert "local in sub for local-user" in lines
    assert "local=hi-local-user" in lines
    # The evidence lists each fetched action's commit; show prints it.
    evidence = harness.pool().get(job.id).evidence
    assert evidence.actions == {
        "someorg/setup-thing@v1": setup,
        f"someorg/pinned-thing/greeter@{pinned}": pinned,
    }
    shown = harness.cli("show", job.id)
    assert f"someorg/setup-thing@v1 @ {setup}" in shown.stdout, shown.stdout
    as_json = json.loads(harness.cli("show", job.id, "--json").stdout)
    assert as_json["evidence"]["actions"]["someorg/setup-thing@v1"] == setup

    # A second job on the same runner host takes both from the cache: nothing is fetched.
    cache = harness.root / "home" / "actions"
    before = {sha: (cache / sha).stat().st_ino for sha in (setup, pinned)}
    code, jobs = run(harness, git_server, wf)
    log = store.read_log(jobs["use"].id)
    assert code == 0, log
    assert f"action someorg/setup-thing@v1: {setup} (cached on this runner)" in log
    assert f"{pinned} (cached on this runner)" in log
    assert "(fetched)" not in log
    assert {sha: (cache / sha).stat().st_ino for sha in (setup, pinned)} == before
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == sorted(before)


def test_unknown_refs_missing_action_files_and_deep_nesting_fail_clearly(
    harness: Harness,
    linux_worker: Worker,
    git_server: GitServer,
    actions: dict[str, str],
    tmp_path: Path,
) -> None:
    wf = tmp_path / "failing.yml"
    wf.write_text(FAILING)
    code, jobs = run(harness, git_server, wf)
    assert code == 1
    store = harness.pool().store
    assert {k: j.state for k, j in jobs.items()} == {
        "unknown-ref": "failed",
        "no-action": "failed",
        "too-deep": "failed",
    }
    log = store.read_log(jobs["unknown-ref"].id)
    assert "##[error]action someorg/setup-thing@v9: 'v9' is not a branch, tag or ref of " in log
    log = store.read_log(jobs["no-action"].id)
    assert (
        "##[error]action someorg/not-an-action@main: no action.yml or action.yaml in the root "
        "of the action; check the uses: path"
    ) in log, log
    log = store.read_log(jobs["too-deep"].id)
    assert "composite actions are nested more than 8 deep" in log, log
    assert "Traceback" not in log


def test_validate_refuses_unpinned_actions_on_deploy_and_reads_local_actions(
    harness: Harness, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".ci" / "actions" / "old").mkdir(parents=True)
    (repo / ".ci" / "actions" / "old" / "action.yml").write_text(
        "name: old\nruns:\n  using: node12\n  main: index.js\n"
    )
    wf = repo / "ship.yml"
    sha = "0123456789abcdef0123456789abcdef01234567"
    wf.write_text(
        "on: push\njobs:\n  ship:\n    runs-on: deploy\n    steps:\n"
        "      - uses: someorg/setup-thing@v1\n"
        f"      - uses: someorg/setup-thing@{sha}\n"
    )
    res = harness.cli("validate", str(wf))
    assert res.returncode == 1
    assert (
        f"{wf}:6:15: jobs.ship.steps[0].uses: someorg/setup-thing@v1 is not pinned: this "
        "capability runs actions only at a full commit SHA (require_pinned_actions)"
    ) in " ".join(res.stderr.split()), res.stderr
    assert f"@{sha}" not in res.stderr
    local = repo / "local.yml"
    local.write_text(
        "on: push\njobs:\n  a:\n    runs-on: linux\n    steps:\n      - uses: ./.ci/actions/old\n"
    )
    res = harness.cli("validate", str(local))
    assert res.returncode == 1
    assert ".ci/actions/old/action.yml:3:10: runs.using: 'node12' is not supported" in res.stderr
