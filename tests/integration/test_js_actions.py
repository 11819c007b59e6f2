"""JavaScript and container actions end to end, from a workflow run on real workers.

The JavaScript action is built on the real ``@actions/core`` from the npm registry
(installed at test time, committed with the action as real actions ship their
``node_modules``/``dist``). It runs in a job container whose image has node's libraries
but no node (node comes from the capability's ``node_runtime = "/usr"``, mounted read-only),
and on the host (``iso``, host mode, node from the PATH). A capability without node says
how to fix it. The container action is a Dockerfile built FROM scratch with busybox."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci_pool import defaults
from ci_pool.embedded import RedisServer, make_repo
from tests.conftest import (
    FAST_TIMINGS,
    OPEN_POLICY,
    GitServer,
    Harness,
    Worker,
    containers_of,
    need,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NODE_IMAGE = "ci-pool-test/node-libs:latest"
TEST_LABEL = "ci-pool.test"
REDIS_DB = 10
TOKEN = "Hidden-Value-8472"

GREET_ACTION = """\
name: greet
inputs:
  who: {required: true}
  greeting-word: {default: hi}
  token: {default: ""}
outputs:
  greeting: {description: what was said}
runs:
  using: node20
  pre: pre.mjs
  main: index.mjs
  post: post.mjs
"""
GREET_PRE = """\
import * as core from '@actions/core';
core.saveState('pre', 'pre-ran');
console.log('pre phase ran');
"""
GREET_MAIN = """\
import * as core from '@actions/core';
const who = core.getInput('who', {required: true});
const word = core.getInput('greeting-word');
const token = core.getInput('token');
core.setSecret(token);
console.log(`token is ${token}`);
console.log(`pre state in main: ${core.getState('pre')}`);
core.setOutput('greeting', `${word} ${who}`);
core.exportVariable('FROM_JS', `exported-${who}`);
core.addPath(`${process.env.RUNNER_TEMP}/greet-bin`);
core.saveState('who', `state-${who}`);
const where = process.env.GITHUB_ACTION_PATH.endsWith('/.github/actions/greet');
console.log(`action=${process.env.GITHUB_ACTION} action-path-ok=${where}`);
core.warning('greet warns');
await core.summary.addRaw(`greeted ${who}`).write();
"""
GREET_POST = """\
import * as core from '@actions/core';
console.log(`post: who=${core.getState('who')} pre=${core.getState('pre')}`);
"""

BOX_ACTION = """\
name: box
inputs:
  word: {default: boxed}
outputs:
  result: {description: from the container}
runs:
  using: docker
  image: Dockerfile
  args: ["${{ inputs.word }}", "second arg"]
  env:
    BOX_ENV: from-action-env
  post-entrypoint: /post.sh
"""
BOX_DOCKERFILE = """\
# a container action built on the runner, from nothing but busybox
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY entrypoint.sh post.sh /
ENTRYPOINT ["/entrypoint.sh"]
"""
BOX_ENTRYPOINT = """\
#!/bin/sh
echo "box args: $1 | $2 env=$BOX_ENV input=$INPUT_WORD pwd=$(pwd) ws=$GITHUB_WORKSPACE"
echo "made-by-box $1" > "$GITHUB_WORKSPACE/box-file.txt"
echo "result=box-$1" >> "$GITHUB_OUTPUT"
echo "BOX_EXPORTED=yes" >> "$GITHUB_ENV"
"""
BOX_POST = '#!/bin/sh\necho "box post ran in $(pwd)"\n'

JS_STEPS = f"""\
    steps:
      - uses: actions/checkout@v4
      - id: greet
        uses: ./.github/actions/greet
        with:
          who: world
          token: {TOKEN}
      - run: |
          echo "out=${{{{ steps.greet.outputs.greeting }}}} env=$FROM_JS"
          case ":$PATH:" in *":$RUNNER_TEMP/greet-bin:"*) echo "path added";; esac
      - run: exit 3
      - if: always()
        run: echo "last step ran"
"""

WORKFLOW = f"""\
on: push
jobs:
  js-docker:
    runs-on: linux
{JS_STEPS}
  js-host:
    runs-on: iso
{JS_STEPS}
  box:
    runs-on: linux
    steps:
      - uses: actions/checkout@v4
      - id: box
        uses: ./.github/actions/box
        with: {{word: hello}}
      - id: img
        uses: docker://{NODE_IMAGE}
        with:
          entrypoint: /bin/sh
          args: -c "echo color=$INPUT_COLOR >> $GITHUB_OUTPUT"
          color: blue
      - uses: docker://{NODE_IMAGE}
        timeout-minutes: 0.05
        continue-on-error: true
        with: {{entrypoint: /bin/sleep, args: "300"}}
      - run: |
          echo "box-out=${{{{ steps.box.outputs.result }}}} exported=$BOX_EXPORTED"
          echo "file=$(cat box-file.txt) img-out=${{{{ steps.img.outputs.color }}}}"
  box-host:
    runs-on: iso
    steps:
      - uses: actions/checkout@v4
      - id: box
        uses: ./.github/actions/box
      - run: echo "host box-out=${{{{ steps.box.outputs.result }}}} file=$(cat box-file.txt)"
"""


@pytest.fixture(scope="session")
def actions_core(session_dir: Path) -> dict[str, bytes]:
    """``node_modules`` holding ``@actions/core``, installed from the npm registry."""
    npm = shutil.which("npm")
    need(npm is not None, "npm is not installed (Debian: apt-get install npm)")
    assert npm is not None
    where = session_dir / "npm"
    where.mkdir()
    res = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "@actions/core"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    need(res.returncode == 0, f"npm install @actions/core failed: {res.stderr[-500:]}")
    modules = where / "node_modules"
    return {
        str(p.relative_to(where)): p.read_bytes()
        for p in sorted(modules.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def build_node_libs_image(client: Any) -> None:
    """busybox plus the libraries the host's node links against, but no node."""
    node = shutil.which("node")
    need(node is not None, "node is not installed (Debian: apt-get install nodejs)")
    assert node is not None
    ldd = subprocess.run(["ldd", node], capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp)
        shutil.copy(shutil.which("busybox") or "/bin/busybox", ctx / "busybox")
        for lib in re.findall(r"(/\S+) \(0x", ldd):
            dest = ctx / "root" / lib.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(lib, dest)
        (ctx / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY root/ /\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        )
        client.images.build(path=tmp, tag=NODE_IMAGE, rm=True, labels={TEST_LABEL: "js"})


@pytest.fixture(scope="module")
def actions_repo(git_server: GitServer, actions_core: dict[str, bytes]) -> str:
    """The repository holding the actions the workflows use; its URL."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    files: dict[str, str | bytes] = {
        "README.md": "actions app\n",
        ".github/actions/greet/action.yml": GREET_ACTION,
        ".github/actions/greet/pre.mjs": GREET_PRE,
        ".github/actions/greet/index.mjs": GREET_MAIN,
        ".github/actions/greet/post.mjs": GREET_POST,
        **{f".github/actions/greet/{k}": v for k, v in actions_core.items()},
        ".github/actions/box/action.yml": BOX_ACTION,
        ".github/actions/box/Dockerfile": BOX_DOCKERFILE,
        ".github/actions/box/busybox": busybox,
        ".github/actions/box/entrypoint.sh": BOX_ENTRYPOINT,
        ".github/actions/box/post.sh": BOX_POST,
    }
    git_server.shas["acme/actions.git"] = make_repo(git_server.base / "acme" / "actions.git", files)
    return git_server.url("acme/actions.git")


@pytest.fixture(scope="module")
def pool(
    session_dir: Path,
    redis_server: RedisServer,
    docker_client: Any,
    actions_repo: str,
    git_server: GitServer,
) -> Iterator[Harness]:
    """linux: node's libraries in the image, node from node_runtime; iso: host mode."""
    import redis

    build_node_libs_image(docker_client)
    root = session_dir / "js-actions"
    root.mkdir()
    url = redis_server.url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    # Remote actions (uses: acme/actions/...@main) come from the test git server.
    h = Harness(root, url, {**FAST_TIMINGS, "actions_url": git_server.url("").rstrip("/")})
    h.config.write_text(
        f'[capabilities.linux]\nimage = "{NODE_IMAGE}"\nnode_runtime = "/usr"\n\n'
        f"[capabilities.iso]\n{OPEN_POLICY}\n"
    )
    h.start_worker("linux", concurrency=2)
    h.start_worker("iso")
    yield h
    h.stop()
    for image in own_action_images(docker_client):
        docker_client.images.remove(image.id, force=True)
    docker_client.images.remove(NODE_IMAGE, force=True)


def own_action_images(docker_client: Any) -> list[Any]:
    """The action images this module's jobs built (other suites build their own)."""
    found = docker_client.images.list(filters={"label": defaults.LABEL_ACTION_IMAGE})
    return [
        i for i in found if i.labels[defaults.LABEL_ACTION_IMAGE].startswith("./.github/actions/")
    ]


def run_workflow(h: Harness, repo: str, text: str, tmp_path: Path) -> dict[str, Any]:
    """Run a workflow at main of ``repo``; its jobs by key."""
    wf = tmp_path / "actions.yml"
    wf.write_text(text)
    res = h.cli("run", str(wf), "--repo", repo, "--ref", "main", timeout=240)
    assert "Traceback" not in res.stderr, res.stderr
    pid = res.stderr.split()[1].rstrip(":")
    return {r.key: r for r in h.pool().store.pipeline_jobs(pid)}


def lines_of(log: str) -> list[str]:
    return [line.strip() for line in log.splitlines()]


def check_js_job(log: str, state: str) -> None:
    """What the JavaScript action did, as the job's log shows it."""
    lines = lines_of(log)
    assert state == "failed", log
    assert "pre phase ran" in lines, log
    assert "token is ***" in lines
    assert TOKEN not in log
    assert "pre state in main: pre-ran" in lines
    assert "action=greet action-path-ok=true" in lines
    assert "##[warning]greet warns" in lines
    # The output, the exported variable and the added path reach the later steps.
    assert "out=hi world env=exported-world" in lines
    assert "path added" in lines
    # post ran after every step of the job, the failed one included, with main's state.
    failed = next(i for i, x in enumerate(lines) if x.startswith("##[step] 4 exit 3 in "))
    post = lines.index("post: who=state-world pre=pre-ran")
    assert post > lines.index("last step ran") > failed


def test_javascript_and_container_actions_run_from_a_workflow(
    pool: Harness, actions_repo: str, docker_client: Any, tmp_path: Path
) -> None:
    jobs = run_workflow(pool, actions_repo, WORKFLOW, tmp_path)
    store = pool.pool().store
    logs = {key: store.read_log(job.id) for key, job in jobs.items()}

    for key in ("js-docker", "js-host"):
        check_js_job(logs[key], jobs[key].state)
        # The summary and the annotation the action made are the job's, from step 2.
        summaries = store.summaries(jobs[key].id)
        assert [(x.step, x.markdown.strip()) for x in summaries] == [(2, "greeted world")]
        notes = store.annotations(jobs[key].id)
        assert [(a.level, a.message, a.step) for a in notes] == [("warning", "greet warns", 2)]
    assert jobs["js-docker"].evidence.mode == "docker"
    assert jobs["js-host"].evidence.mode == "host"

    box = lines_of(logs["box"])
    assert jobs["box"].state == "succeeded", logs["box"]
    assert (
        "box args: hello | second arg env=from-action-env input=hello pwd=/workspace ws=/workspace"
    ) in box
    assert "box-out=box-hello exported=yes" in box
    assert "file=made-by-box hello img-out=blue" in box
    # The container of a step past its timeout is stopped; the job goes on.
    assert any(re.fullmatch(r"##\[step\] 4 timed out after \d+s", x) for x in box), box
    last = box.index("file=made-by-box hello img-out=blue")
    assert box.index("box post ran in /workspace") > last
    # In host mode too, beside the host's steps, seeing the same workspace.
    host = lines_of(logs["box-host"])
    assert jobs["box-host"].state == "succeeded", logs["box-host"]
    assert "host box-out=box-boxed file=made-by-box boxed" in host
    built = own_action_images(docker_client)
    assert len(built) == 1
    for job in jobs.values():
        assert containers_of(docker_client, job.id) == []


REMOTE_PRE = """\
on: push
jobs:
  remote:
    runs-on: linux
    steps:
      - run: echo first step ran
      - id: greet
        uses: acme/actions/.github/actions/greet@main
        with: {who: remote}
      - run: echo "said ${{ steps.greet.outputs.greeting }}"
"""


def test_a_remote_actions_pre_runs_at_job_start_before_the_first_step(
    pool: Harness, actions_repo: str, tmp_path: Path
) -> None:
    jobs = run_workflow(pool, actions_repo, REMOTE_PRE, tmp_path)
    log = pool.pool().store.read_log(jobs["remote"].id)
    lines = lines_of(log)
    assert jobs["remote"].state == "succeeded", log
    # fetched and its pre run before step 1; main (step 2) runs alone, with pre's state
    assert lines.index("pre phase ran") < lines.index("first step ran"), log
    assert lines.count("pre phase ran") == 1
    assert any(x.startswith("##[step] pre 2 ") for x in lines), log
    assert "pre state in main: pre-ran" in lines
    assert "said hi remote" in lines
    assert lines.index("post: who=state-remote pre=pre-ran") > lines.index("said hi remote")


def test_a_javascript_action_without_node_says_how_to_fix_it(
    harness: Harness, linux_worker: Worker, actions_repo: str, tmp_path: Path
) -> None:
    """The shared pool's linux capability: busybox, no node_runtime."""
    workflow = (
        "on: push\njobs:\n  no-node:\n    runs-on: linux\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - uses: ./.github/actions/greet\n        with: {who: nobody}\n"
    )
    jobs = run_workflow(harness, actions_repo, workflow, tmp_path)
    log = harness.pool().store.read_log(jobs["no-node"].id)
    assert jobs["no-node"].state == "failed", log
    assert (
        "##[error]action ./.github/actions/greet runs on Node.js (node20) and capability "
        "'linux' has none: set node_runtime = \"/usr\" (a directory holding bin/node) under "
        "[capabilities.linux] in ci-pool.toml, or run the job in an image with node on its PATH"
    ) in log.splitlines()
    assert "pre phase ran" not in log
