"""Workflow contexts end to end on a real worker (busybox in Docker): github.* and its
aliases, runner.*, job.*, strategy.*, vars.*, inputs.* of a workflow_dispatch run,
secrets.* and github.token (masked), toJSON/fromJSON/join/hashFiles, and the GITHUB_*,
RUNNER_* variables Actions sets, as the job's log shows them."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci_pool.embedded import RedisServer, make_repo
from tests.conftest import FAST_TIMINGS, GitServer, Harness, write_config

pytestmark = pytest.mark.integration

FORGE_TOKEN = "forge-token-Value-123"
API_TOKEN = "api-token-Value-456"
FILES = {
    "README.md": "contexts app\n",
    "go.sum": "module sums\n",
    "sub/go.sum": "nested sums\n",
    "VERSION": "2.0.0\n",
}

WORKFLOW = """\
name: contexts
on:
  push:
  workflow_dispatch:
    inputs:
      level:
        type: choice
        options: [low, high]
        default: low
      dry:
        type: boolean
        default: false
      count:
        type: number
        required: true
env:
  WF_REPO: ${{ gitea.repository }}
jobs:
  show:
    runs-on: linux
    strategy:
      matrix:
        n: [1, 2]
    env:
      JOB_TOKEN: ${{ secrets.API_TOKEN }}
      FROM_VARS: ${{ vars.GREETING }}
    steps:
      - uses: actions/checkout@v4
      - run: |
          echo "repo=${{ github.repository }} owner=${{ github.repository_owner }} wf=$WF_REPO"
          echo "ref=${{ github.ref }} name=${{ github.ref_name }} type=${{ github.ref_type }}"
          echo "event=${{ github.event_name }} payload=${{ github.event.inputs.count }}"
          echo "inputs level=${{ inputs.level }} dry=${{ inputs.dry }} count=${{ inputs.count }}"
          echo "vars=${{ vars.GREETING }} env-vars=$FROM_VARS unset=[${{ vars.NOPE }}]"
          echo "runner=${{ runner.os }}/${{ runner.arch }} name=${{ runner.name }}"
          echo "strategy=${{ strategy.job-index }}/${{ strategy.job-total }} \
            ff=${{ strategy.fail-fast }}"
          echo "job=${{ job.status }} id-set=${{ job.container.id != '' }}"
          echo "server=${{ github.server_url }} ws=${{ github.workspace }} job=${{ github.job }}"
          echo "alias=${{ forgejo.sha == github.sha }} run=${{ github.run_number }}"
          echo "join=${{ join(fromJSON('["a","b"]'), '+') }} json=${{ toJSON(matrix.n) }}"
          echo "hash=${{ hashFiles('**/go.sum') }}"
          echo "none=[${{ hashFiles('**/nothing.here') }}]"
          echo "env CI=$CI GA=$GITHUB_ACTIONS WS=$GITHUB_WORKSPACE R=$GITHUB_REPOSITORY"
          echo "env O=$GITHUB_REPOSITORY_OWNER RN=$GITHUB_REF_NAME RT=$GITHUB_REF_TYPE"
          echo "env EN=$GITHUB_EVENT_NAME NUM=$GITHUB_RUN_NUMBER J=$GITHUB_JOB OS=$RUNNER_OS"
          echo "env SHA=$GITHUB_SHA SRV=$GITHUB_SERVER_URL ACT=$GITHUB_RUN_ATTEMPT"
          test -d "$RUNNER_TEMP" && test -d "$RUNNER_TOOL_CACHE" && echo "runner dirs exist"
          echo "event-file=$(cat "$GITHUB_EVENT_PATH")"
          if echo x > "$GITHUB_EVENT_PATH"; then echo "event file writable"; fi
          echo "secret=${{ secrets.API_TOKEN }} token=${{ github.token }} env=$JOB_TOKEN"
          echo "same=${{ secrets.GITHUB_TOKEN == github.token }}"
          echo "as-env=[${API_TOKEN:-}${GITHUB_TOKEN:-}]"
          echo "deploy=[${{ secrets.DEPLOY_KEY }}]"
"""


@pytest.fixture(scope="module")
def pool(
    session_dir: Path, redis_server: RedisServer, busybox_image: str, git_server: GitServer
) -> Iterator[Harness]:
    root = session_dir / "contexts"
    root.mkdir()
    h = Harness(root, redis_server.url.rsplit("/", 1)[0] + "/13", dict(FAST_TIMINGS))
    (root / "forge").write_text(FORGE_TOKEN + "\n")
    (root / "api").write_text(API_TOKEN + "\n")
    (root / "deploy").write_text("deploy-only-Value-789\n")
    write_config(
        h.config,
        busybox_image,
        linux=f'secrets = {{ API_TOKEN = "file:{root / "api"}", '
        f'GITHUB_TOKEN = "file:{root / "forge"}" }}\n',
        extra=f'secrets = {{ DEPLOY_KEY = "file:{root / "deploy"}" }}\n',
    )
    h.config.write_text('[vars]\nGREETING = "hello-vars"\n\n' + h.config.read_text())
    git_server.shas["acme/app.git"] = make_repo(git_server.base / "acme" / "app.git", FILES)
    h.start_worker("linux", concurrency=2)
    yield h
    h.stop()


def run(h: Harness, git: GitServer, wf: Path, *extra: str) -> Any:
    return h.cli(
        "run", str(wf), "--repo", git.url("acme/app.git"), "--ref", "main", *extra, timeout=240
    )


def hash_files(*contents: str) -> str:
    """GitHub's hashFiles: sha256 over the sha256 digests of the files, in path order."""
    total = hashlib.sha256()
    for text in contents:
        total.update(hashlib.sha256(text.encode()).digest())
    return total.hexdigest()


GO_SUMS = hash_files(FILES["go.sum"], FILES["sub/go.sum"])


def test_a_dispatch_run_shows_every_context_and_variable(
    pool: Harness, git_server: GitServer, tmp_path: Path
) -> None:
    wf = tmp_path / "contexts.yml"
    wf.write_text(WORKFLOW)
    res = run(pool, git_server, wf, "--input", "count=3", "--input", "dry=TRUE")
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 0, res.stdout + res.stderr
    pid = res.stderr.split()[1].rstrip(":")
    store = pool.pool().store
    rows = {r.key: r for r in store.pipeline_jobs(pid)}
    assert set(rows) == {"show (1)", "show (2)"}
    sha = git_server.shas["acme/app.git"]
    for index, key in enumerate(sorted(rows)):
        log = store.read_log(rows[key].id)
        lines = set(log.splitlines())
        assert "repo=acme/app owner=acme wf=acme/app" in lines, log
        assert "ref=refs/heads/main name=main type=branch" in lines
        assert "event=workflow_dispatch payload=3" in lines
        assert "inputs level=low dry=true count=3" in lines
        assert "vars=hello-vars env-vars=hello-vars unset=[]" in lines
        runner_id = rows[key].runner_id
        assert re.search(rf"^runner=Linux/(X64|ARM64) name={re.escape(runner_id)}$", log, re.M)
        assert f"strategy={index}/2 ff=true" in {" ".join(x.split()) for x in lines}
        assert "job=success id-set=true" in lines
        assert "server=https://127.0.0.1 ws=/workspace job=show" in lines
        assert "alias=true run=1" in lines
        assert f"join=a+b json={index + 1}" in lines
        assert f"hash={GO_SUMS}" in lines
        assert "none=[]" in lines
        assert "env CI=true GA=true WS=/workspace R=acme/app" in lines
        assert "env O=acme RN=main RT=branch" in lines
        assert "env EN=workflow_dispatch NUM=1 J=show OS=Linux" in lines
        assert f"env SHA={sha} SRV=https://127.0.0.1 ACT=1" in lines
        assert "runner dirs exist" in lines
        event = next(x for x in lines if x.startswith("event-file="))
        assert json.loads(event.removeprefix("event-file=")) == {
            "inputs": {"level": "low", "dry": True, "count": 3}
        }
        assert "event file writable" not in lines
        # Secrets reach the job through its expressions, masked in the log; the forge
        # token is github.token too. None arrives as a variable of its own.
        assert "secret=*** token=*** env=***" in lines
        assert "same=true" in lines
        assert "as-env=[]" in lines
        assert API_TOKEN not in log and FORGE_TOKEN not in log
        # A secret the capability does not hold is empty, with a warning.
        assert "deploy=[]" in lines
        assert "##[warning]secret 'DEPLOY_KEY' is not offered by capability 'linux'" in log
        assert "deploy-only-Value-789" not in log


def test_a_second_run_of_the_same_file_gets_the_next_run_number(
    pool: Harness, git_server: GitServer, tmp_path: Path
) -> None:
    wf = tmp_path / "numbered.yml"
    wf.write_text(
        "on: push\njobs:\n  n:\n    runs-on: linux\n    steps:\n"
        '      - run: echo "number=${{ github.run_number }}/$GITHUB_RUN_NUMBER '
        'event=${{ toJSON(github.event) }}"\n'
    )
    for expected in (1, 2):
        res = run(pool, git_server, wf)
        assert res.returncode == 0, res.stderr
        pid = res.stderr.split()[1].rstrip(":")
        store = pool.pool().store
        (job,) = store.pipeline_jobs(pid)
        assert f"number={expected}/{expected} event={{}}" in store.read_log(job.id)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--input", "count=3", "--input", "colour=red"], ["inputs.colour", "no input 'colour'"]),
        (["--event", "workflow_dispatch"], ["inputs.count", "is required"]),
        (["--input", "count=many"], ["inputs.count", "'many' is not a number"]),
        (["--input", "count=1", "--input", "level=max"], ["inputs.level", "low, high"]),
        (["--input", "count=1", "--input", "dry=maybe"], ["inputs.dry", "true or false"]),
        (["--input", "count"], ["--input", "'count' is not NAME=VALUE"]),
    ],
)
def test_bad_inputs_are_refused_naming_the_input(
    pool: Harness, git_server: GitServer, tmp_path: Path, args: list[str], words: list[str]
) -> None:
    wf = tmp_path / "inputs.yml"
    wf.write_text(WORKFLOW)
    res = run(pool, git_server, wf, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    for word in words:
        assert word in res.stderr, res.stderr
    assert "pipeline " not in res.stderr  # nothing was submitted


def test_the_api_takes_dispatch_inputs_and_refuses_bad_ones(
    pool: Harness, git_server: GitServer
) -> None:
    from fastapi.testclient import TestClient

    from ci_pool.api.app import create_app
    from tests.integration.test_api import assert_error, auth, make_token

    token = make_token(pool, "submit", "read")
    workflow = (
        "on:\n  workflow_dispatch:\n    inputs:\n      count: {type: number, required: true}\n"
        "jobs:\n  a:\n    runs-on: linux\n    steps:\n"
        '      - run: echo "count=${{ inputs.count }} vars=${{ vars.GREETING }}"\n'
        "      - run: exit 3\n"
        "        continue-on-error: true\n"
        "      - run: exit 1\n"
        "      - if: always()\n"
        '        run: echo "status=${{ job.status }}"\n'
        "  go:\n    runs-on: linux\n"
        "    if: inputs.count == 7 && vars.GREETING == 'hello-vars' && github.event.inputs.count\n"
        "    steps: [{run: echo yes}]\n"
        "  skip:\n    runs-on: linux\n    if: gitea.repository_owner != 'acme'\n"
        "    steps: [{run: echo no}]\n"
    )
    body = {
        "workflow": workflow,
        "file": "dispatch.yml",
        "repo": git_server.url("acme/app.git"),
        "ref": "main",
        "event": "workflow_dispatch",
    }
    with TestClient(create_app(pool.settings())) as client:
        res = client.post(
            "/v1/pipelines", json={**body, "inputs": {"count": "x"}}, headers=auth(token)
        )
        assert_error(res, 422, "invalid_input", "inputs.count")
        assert "'x' is not a number" in res.json()["error"]["message"]
        res = client.post("/v1/pipelines", json={**body, "inputs": {"n": "1"}}, headers=auth(token))
        assert_error(res, 422, "invalid_input", "inputs.n")
        too_many = {f"i{n}": "1" for n in range(26)}
        res = client.post("/v1/pipelines", json={**body, "inputs": too_many}, headers=auth(token))
        assert res.status_code == 422 and "Traceback" not in res.text
        res = client.post(
            "/v1/pipelines", json={**body, "inputs": {"count": "7"}}, headers=auth(token)
        )
        assert res.status_code == 201, res.text
        pid = res.json()["id"]
        deadline = time.monotonic() + 90
        while (shown := client.get(f"/v1/pipelines/{pid}", headers=auth(token)).json())[
            "state"
        ] == "running":
            assert time.monotonic() < deadline, shown
            time.sleep(0.2)
    jobs = {j["key"]: j for j in shown["jobs"]}
    assert (jobs["a"]["state"], jobs["go"]["state"], jobs["skip"]["state"]) == (
        "failed",
        "succeeded",
        "skipped",
    ), shown
    lines = pool.pool().store.read_log(jobs["a"]["id"]).splitlines()
    assert "count=7 vars=hello-vars" in lines
    assert "status=failure" in lines


def test_host_mode_paths_are_the_runners_own(
    harness: Harness, git_server: GitServer, tmp_path: Path
) -> None:
    """On a host-mode runner (iso) the workspace, temp and event paths are host paths that
    exist, and the workspace is where the steps run."""
    harness.start_worker("iso")
    pool_ = harness.pool()
    pipe = pool_.submit_pipeline(
        "on: push\njobs:\n  host:\n    runs-on: iso\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - run: |\n"
        '          test "$GITHUB_WORKSPACE" = "$(pwd)" && echo "workspace is cwd"\n'
        '          test "${{ github.workspace }}" = "$GITHUB_WORKSPACE" && echo "same ws"\n'
        '          test -d "$RUNNER_TEMP" && test -d "$RUNNER_TOOL_CACHE" && echo "dirs ok"\n'
        '          test -r VERSION && echo "checkout here"\n'
        '          echo "event=$(cat "$GITHUB_EVENT_PATH") os=$RUNNER_OS"\n',
        "host.yml",
        git_server.url(),
        "main",
    )
    (job,) = pool_.store.pipeline_jobs(pipe.id)
    job = pool_.wait(job.id, timeout=120)
    lines = pool_.store.read_log(job.id).splitlines()
    assert job.state == "succeeded", lines
    for line in ("workspace is cwd", "same ws", "dirs ok", "checkout here", "event={} os=Linux"):
        assert line in lines, lines
