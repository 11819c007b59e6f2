"""The workflow corpus (tests/corpus/, described in its INDEX.md): files in the shapes that
public GitHub, Gitea and Forgejo workflows use, written for these tests.

Every file must pass ``ci-pool validate`` against a ci-pool.toml that maps the labels, and
chosen files run end to end on a real worker (busybox image in Docker, the loopback git
server), each checked against the final states and log lines the file promises.

Files that need a feature not merged yet are expected to fail (``xfail``, not strict) through
the FEATURES table below: set ``merged=True`` when a feature lands and its files must pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ci_pool.embedded import RedisServer, make_repo
from ci_pool.exceptions import CIPoolError
from tests.conftest import TEST_IMAGE, GitServer, Harness, isolated_harness

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
FILES = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.glob("*/*.y*ml"))
#: The Redis db of this module's own pool (other isolated pools use 1-3 and 15).
REDIS_DB = 12


@dataclass(frozen=True)
class Feature:
    """A feature some corpus files need: who builds it, whether it is on the branch yet,
    and whether ``validate`` refuses its files until then (else only running them fails)."""

    owner: str
    merged: bool
    at_parse: bool
    files: tuple[str, ...]


FEATURES: dict[str, Feature] = {
    # permissions, run-name, environment accepted and recorded.
    "accepted-keys": Feature(
        "checkout",
        True,
        True,
        (
            "github/checkout-options.yml",
            "github/concurrency-job.yml",
            "github/permissions-environment.yml",
            "github/release-tags.yml",
            "github/workflow-dispatch-inputs.yml",
            "gitea/demo.yaml",
            "gitea/vars-deploy.yaml",
        ),
    ),
    # persist-credentials, clean, filter, sparse-checkout, path, repository, a ref
    # expression, several checkouts per job, each at its place among the steps.
    "checkout-options": Feature(
        "checkout",
        True,
        True,
        (
            "github/checkout-late.yml",
            "github/checkout-multi.yml",
            "github/checkout-options.yml",
            "forgejo/ci.yaml",
        ),
    ),
    "concurrency": Feature(
        "conc",
        True,
        True,
        (
            "github/concurrency-job.yml",
            "github/concurrency-workflow.yml",
            "github/pull-request-ci.yml",
            "forgejo/ci.yaml",
        ),
    ),
    # github.* in full (ref_name, ref_type, repository_owner, workspace, run_number, actor,
    # server_url, event, head_ref/base_ref...) and the gitea.* / forgejo.* aliases.
    "github-context": Feature(
        "ctx",
        True,
        True,
        (
            "github/github-context-full.yml",
            "github/pull-request-ci.yml",
            "github/release-tags.yml",
            "gitea/demo.yaml",
            "gitea/release.yaml",
            "forgejo/ci.yaml",
        ),
    ),
    # github.workflow (the most common concurrency group) is in no slice's list yet.
    "github-workflow": Feature("conc", True, True, ("github/concurrency-workflow.yml",)),
    # GITHUB_*, RUNNER_* variables as Actions sets them (scripts only: validate passes).
    "github-env-vars": Feature(
        "ctx", True, False, ("github/github-env-vars.yml", "github/env-files.yml")
    ),
    "secrets-context": Feature(
        "ctx",
        True,
        True,
        (
            "github/release-tags.yml",
            "github/secrets-deploy.yml",
            "gitea/release.yaml",
            "gitea/vars-deploy.yaml",
        ),
    ),
    "vars-context": Feature(
        "ctx", True, True, ("github/vars-config.yml", "gitea/vars-deploy.yaml")
    ),
    "inputs-context": Feature("ctx", True, True, ("github/workflow-dispatch-inputs.yml",)),
    "runner-job-strategy-context": Feature(
        "ctx",
        True,
        True,
        ("github/hashfiles-cache-key.yml", "github/runner-job-strategy.yml", "gitea/demo.yaml"),
    ),
    # toJSON (of a whole context too), fromJSON (indexed), join, hashFiles.
    "functions": Feature(
        "ctx",
        True,
        True,
        (
            "github/dynamic-matrix-fromjson.yml",
            "github/hashfiles-cache-key.yml",
            "github/tojson-join.yml",
        ),
    ),
    # strategy.matrix from fromJSON(needs.*.outputs.*), expanded when the needs have run.
    "dynamic-matrix": Feature("dynmat", True, True, ("github/dynamic-matrix-fromjson.yml",)),
    "env-files": Feature("files", True, False, ("github/env-files.yml",)),
    "workflow-commands": Feature("files", True, False, ("github/workflow-commands.yml",)),
    "label-case": Feature("route", True, True, ("github/self-hosted-linux-x64.yml",)),
    # a built-in action given an input it does not cover runs the real action instead.
    "builtin-fallthrough": Feature("corpus15", True, False, ("github/upload-include-hidden.yml",)),
    "default-capability": Feature("route", True, True, ("github/self-hosted-bare.yml",)),
    "yaml-tab-comment": Feature("route", True, True, ("github/tab-comment.yml",)),
}


def missing(file: str, at_parse: bool) -> list[str]:
    """The unmerged features ``file`` needs (only those ``validate`` checks if at_parse)."""
    return [
        name
        for name, f in FEATURES.items()
        if file in f.files and not f.merged and (f.at_parse or not at_parse)
    ]


def merged(name: str) -> bool:
    return FEATURES[name].merged


def run_of(key: str) -> tuple[str, str]:
    """An E2E key's file and event: ``FILE`` runs on push, ``FILE@EVENT`` on that event."""
    file, _, event = key.partition("@")
    return file, event or "push"


def expect_for(file: str, at_parse: bool) -> Any:
    """``file`` (or an E2E key) as a pytest param, xfail while a feature it needs is missing."""
    needs = missing(run_of(file)[0], at_parse)
    if not needs:
        return file
    return pytest.param(
        file, marks=pytest.mark.xfail(reason=f"needs {', '.join(needs)}", strict=False)
    )


#: Throwaway secrets of the corpus pool's linux capability ('/' and '+' for encoded forms).
API_TOKEN = "corpus-api/token+value"
FORGE_TOKEN = "corpus-forge-token-value"


def write_corpus_config(path: Path, image: str) -> None:
    """A ci-pool.toml mapping the corpus's labels, secrets and variables."""
    secrets = path.parent / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "api-token").write_text(API_TOKEN + "\n")
    (secrets / "forge-token").write_text(FORGE_TOKEN + "\n")
    lines = []
    if merged("default-capability"):
        lines.append('default_capability = "linux"')
    lines += [
        "[capabilities.linux]",
        f'image = "{image}"',
        'labels = ["linux", "x64"]',
        f'secrets = {{ API_TOKEN = "file:{secrets / "api-token"}", '
        f'GITHUB_TOKEN = "file:{secrets / "forge-token"}" }}',
    ]
    if merged("vars-context"):
        lines += [
            "[vars]",
            'REGISTRY = "registry.corpus.invalid"',
            'IMAGE_NAME = "corpus/app"',
            'PUBLISH = "true"',
            'DEPLOY_HOST = "deploy.corpus.invalid"',
            'DEPLOY_USER = "release"',
        ]
    path.write_text("\n".join(lines) + "\n")


# -- every file validates ------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    returncode: int
    stderr: str

    def errors_of(self, file: str) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith(file + ":")]


def validate(config: Path, files: list[str]) -> Validation:
    """``ci-pool validate`` of corpus files (paths relative to the corpus, as printed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
    env["CI_POOL_CONFIG"] = str(config)
    env["CI_POOL_HOME"] = str(config.parent / "home")
    res = subprocess.run(
        [sys.executable, "-m", "ci_pool", "validate", *files],
        cwd=CORPUS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in res.stderr, res.stderr
    return Validation(res.returncode, res.stderr)


@pytest.fixture(scope="module")
def corpus_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tmp_path_factory.mktemp("corpus-config") / "ci-pool.toml"
    write_corpus_config(config, TEST_IMAGE)
    return config


@pytest.fixture(scope="module")
def validated(corpus_config: Path) -> Validation:
    """One ``validate`` run over the whole corpus; each file's errors are picked out of it."""
    return validate(corpus_config, FILES)


def test_corpus_is_large_enough_and_indexed() -> None:
    index = (CORPUS / "INDEX.md").read_text()
    assert len(FILES) >= 32
    assert {f.split("/")[0] for f in FILES} == {"github", "gitea", "forgejo"}
    unindexed = [f for f in FILES if f"`{f}`" not in index]
    assert not unindexed, f"files missing from tests/corpus/INDEX.md: {unindexed}"
    listed = {f for feature in FEATURES.values() for f in feature.files}
    assert listed <= set(FILES), listed - set(FILES)
    run = {run_of(key)[0] for key in E2E}
    assert run <= set(FILES), run - set(FILES)


@pytest.mark.parametrize("file", [expect_for(f, at_parse=True) for f in FILES])
def test_corpus_file_validates(validated: Validation, file: str) -> None:
    assert validated.errors_of(file) == []


def test_validate_exits_zero_on_every_file_it_supports(corpus_config: Path) -> None:
    supported = [f for f in FILES if not missing(f, at_parse=True)]
    res = validate(corpus_config, supported)
    assert res.returncode == 0, res.stderr
    assert f"{len(supported)} file(s) valid" in res.stderr


# -- chosen files end to end ---------------------------------------------------------------


@dataclass(frozen=True)
class Promise:
    """What a run of one corpus file promises: states, and lines in its jobs' logs.

    Lines may hold ``{sha}`` (the commit built), ``{version}`` (the VERSION file) and
    ``{forge}`` (the git server's URL, also the pool's ``actions_url``)."""

    state: str
    jobs: dict[str, str]
    lines: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: job key -> text that must not be anywhere in that job's log
    absent: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: job key -> text that ``ci-pool show JOB --json`` must hold (summaries, annotations)
    shown: dict[str, tuple[str, ...]] = field(default_factory=dict)


VERSION = "2.4.1"
E2E: dict[str, Promise] = {
    "github/go-cli-ci.yml": Promise(
        "succeeded",
        {"lint": "succeeded", "test": "succeeded", "build": "succeeded"},
        {
            "lint": ("lint ok for corpus-app",),
            "test": (
                "levels corpus-app job set-by-job set-by-step",
                "level now step, env context says corpus-app",
            ),
            "build": ("built corpus-app {version}",),
        },
    ),
    "github/matrix-include-exclude.yml": Promise(
        "succeeded",
        {
            "test (1.22, amd64)": "succeeded",
            "test (1.23, amd64, true)": "succeeded",
            "test (1.23, arm64)": "succeeded",
            "test (1.24, amd64, true)": "succeeded",
        },
        {
            "test (1.22, amd64)": ("cell go=1.22 arch=amd64 race=off",),
            "test (1.23, amd64, true)": ("cell go=1.23 arch=amd64 race=true",),
            "test (1.23, arm64)": ("cell go=1.23 arch=arm64 race=off",),
            "test (1.24, amd64, true)": ("cell go=1.24 arch=amd64 race=off",),
        },
    ),
    "github/needs-outputs.yml": Promise(
        "succeeded",
        {"version": "succeeded", "package": "succeeded", "announce": "succeeded"},
        {
            "package": ("packaging {version} for edge",),
            "announce": ("edge build {version} is ready",),
        },
    ),
    "github/failure-always.yml": Promise(
        "failed",
        {"test": "failed", "notify": "succeeded", "report": "succeeded", "deploy": "skipped"},
        {
            "test": (
                "lint found 2 issues",
                "running tests",
                "collecting logs, tests were failure",
                "cleanup ran",
            ),
            "notify": ("test job result failure",),
            "report": ("report for failure",),
        },
        absent={"test": ("this line must not appear",)},
    ),
    "github/defaults-run.yml": Promise(
        "succeeded",
        {"check": "succeeded"},
        {"check": ("in api serving api", "docs say corpus docs", "explicit shell in api")},
    ),
    "github/schedule-nightly.yml": Promise(
        "succeeded",
        {"smoke": "succeeded", "full-suite": "skipped", "summary": "succeeded"},
        {"smoke": ("smoke on push",), "summary": ("full suite was skipped",)},
    ),
    "github/schedule-nightly.yml@schedule": Promise(
        "succeeded",
        {"smoke": "succeeded", "full-suite": "succeeded", "summary": "succeeded"},
        {
            "smoke": ("smoke on schedule",),
            "full-suite": ("full suite",),
            "summary": ("full suite was success",),
        },
    ),
    "gitea/go-test.yaml": Promise(
        "succeeded",
        {"test (1.22)": "succeeded", "test (1.23)": "succeeded", "build": "succeeded"},
        {
            "test (1.22)": ("go test with 1.22 on {version}",),
            "test (1.23)": ("go test with 1.23 on {version}",),
            "build": ("build script wrote out/app",),
        },
    ),
    "github/github-context-full.yml": Promise(
        "succeeded",
        {"facts": "succeeded", "mirror-only": "skipped"},
        {
            "facts": (
                "repository=corpus/app",
                "owner=corpus",
                "ref=refs/heads/main ref_name=main ref_type=branch",
                "sha={sha}",
                "event=push",
                "workspace ok",
            )
        },
    ),
    "github/github-env-vars.yml": Promise(
        "succeeded",
        {"vars": "succeeded"},
        {
            "vars": (
                "repo=corpus/app owner=corpus",
                "ref=refs/heads/main name=main type=branch",
                "sha={sha} event=push job=vars",
                "runner os=Linux",
            )
        },
    ),
    "github/env-files.yml": Promise(
        "succeeded",
        {"files": "succeeded"},
        {"files": ("flavour=release", "second line", "corpus-tool says hello")},
        shown={"files": ("## Release notes", "- built release {version}")},
    ),
    "github/workflow-commands.yml": Promise(
        "succeeded",
        {"commands": "succeeded"},
        {
            "commands": (
                "the value is ***",
                "dep-a 1.0",
                "dep-b 2.0",
                "visible not-masked-while-stopped",
            )
        },
        absent={"commands": ("generated-2-4-1-value",)},
        shown={"commands": ("version file read", "docs are short", "deprecated call")},
    ),
    "github/secrets-deploy.yml": Promise(
        "succeeded",
        {"publish": "succeeded"},
        {"publish": ("token is ***", "inline ***", "missing=[]", "token present")},
        absent={"publish": (API_TOKEN, FORGE_TOKEN)},
    ),
    "github/checkout-multi.yml": Promise(
        "succeeded",
        {"build": "succeeded"},
        {"build": ("app {version} with tools 1.0", "tools-lint app")},
    ),
    "github/checkout-late.yml": Promise(
        "succeeded",
        {"ordered": "succeeded"},
        {
            "ordered": (
                "empty workspace before checkout",
                "after first checkout {version}",
                "second checkout in place",
            )
        },
    ),
    "github/self-hosted-linux-x64.yml": Promise(
        "succeeded",
        {"build": "succeeded", "list-form": "succeeded"},
        {"build": ("built on a Linux X64 runner",), "list-form": ("list form routed",)},
    ),
    "github/dynamic-matrix-fromjson.yml": Promise(
        "succeeded",
        {"plan": "succeeded", "build (x86_64)": "succeeded", "build (aarch64)": "succeeded"},
        {
            "build (x86_64)": ("building for x86_64",),
            "build (aarch64)": ("building for aarch64",),
        },
    ),
    "github/self-hosted-bare.yml": Promise(
        "succeeded", {"build": "succeeded"}, {"build": ("built on the default runner",)}
    ),
    "github/vars-config.yml": Promise(
        "succeeded",
        {"image": "succeeded"},
        {"image": ("image registry.corpus.invalid/corpus/app:{version}", "publishing image")},
    ),
    "github/artifacts-between-jobs.yml": Promise(
        "succeeded",
        {"build": "succeeded", "test": "succeeded"},
        {
            "build": ("artifact dist: 2 files, 14 bytes uploaded", "uploaded digest set=true"),
            "test": ("app {version}", "lib", "debug file left out"),
        },
    ),
    "github/cache-restore-keys.yml": Promise(
        "succeeded",
        {"warm": "succeeded", "reuse": "succeeded"},
        {
            "warm": ("cold cache filled",),
            "reuse": ("exact hit=false", "from prefix: downloaded deps"),
        },
    ),
    "github/composite-local.yml": Promise(
        "succeeded",
        {"build": "succeeded"},
        {
            "build": (
                "setting up app {version} in release mode",
                "setup said app-release",
                "app env ok",
            )
        },
    ),
    "github/remote-action.yml": Promise(
        "succeeded",
        {"build": "succeeded"},
        {"build": ("installing thing 3.2", "thing at /opt/thing-3.2", "thing 3.2")},
    ),
    # No mirror holds actions/setup-node here: the step fails saying so; npm never runs.
    "github/setup-node.yml": Promise(
        "failed",
        {"test": "failed"},
        {
            "test": (
                "##[error]action actions/setup-node@v4: could not resolve ref 'v4' at "
                "{forge}/actions/setup-node: the server refused or did not answer",
                "##[step] 3 Run npm ci skipped",
            )
        },
    ),
    "github/upload-include-hidden.yml": Promise(
        "succeeded",
        {"coverage": "succeeded"},
        {
            "coverage": (
                "actions/upload-artifact@v4: the built-in does not cover input "
                "'include-hidden-files'; running the action from actions_url",
                "stand-in upload-artifact: coverage from cov/ hidden=true",
            )
        },
    ),
}

#: The repositories the corpus builds, on the loopback git server (github.repository is
#: owner/name from the URL's path, so the guard in github-context-full.yml matches).
APP_FILES = {
    "VERSION": VERSION + "\n",
    "services/api/NAME": "api\n",
    "services/web/NAME": "web\n",
    "docs/index.md": "corpus docs\n",
    "src/main.c": "int main(void)\n{\n    return 0;\n}\n",
    "go.sum": "example.invalid/mod v1.0.0 h1:corpus=\n",
    "matrix.json": '["x86_64","aarch64"]\n',
    "scripts/build.sh": (
        '#!/bin/sh\nset -e\necho built > "$1/app"\necho "build script wrote $1/app"\n'
    ),
    ".github/actions/setup-app/action.yml": """\
name: setup app
inputs:
  mode:
    default: debug
outputs:
  banner:
    value: ${{ steps.b.outputs.banner }}
runs:
  using: composite
  steps:
    - id: b
      shell: sh
      run: |
        echo "setting up app $(cat VERSION) in ${{ inputs.mode }} mode"
        echo "banner=app-${{ inputs.mode }}" >> "$GITHUB_OUTPUT"
        echo "$GITHUB_ACTION_PATH/bin" >> "$GITHUB_PATH"
""",
    ".github/actions/setup-app/bin/app-env.sh": '#!/bin/sh\necho "app env ok"\n',
}
#: Action repositories on the forge that ``actions_url`` names (the loopback git server):
#: owner/repo -> files; each is tagged ``v1`` and ``v4``. ``actions/upload-artifact`` stands
#: in for the real action, run when a step gives an input the built-in does not cover.
ACTION_REPOS = {
    "corpusorg/setup-thing": {
        "action.yml": """\
name: setup thing
inputs:
  thing-version:
    default: "1.0"
outputs:
  thing-home:
    value: /opt/thing-${{ inputs.thing-version }}
runs:
  using: composite
  steps:
    - shell: sh
      run: |
        echo "installing thing ${{ inputs.thing-version }}"
        echo "$GITHUB_ACTION_PATH/bin" >> "$GITHUB_PATH"
        echo "THING_VERSION=${{ inputs.thing-version }}" >> "$GITHUB_ENV"
""",
        "bin/thing.sh": '#!/bin/sh\necho "thing $THING_VERSION"\n',
    },
    "actions/upload-artifact": {
        "action.yml": """\
name: upload-artifact stand-in
inputs:
  name:
    default: artifact
  path:
    required: true
  include-hidden-files:
    default: "false"
runs:
  using: composite
  steps:
    - shell: sh
      run: |
        test -f cov/.summary
        hidden="${{ inputs.include-hidden-files }}"
        echo "stand-in upload-artifact: ${{ inputs.name }} from ${{ inputs.path }} hidden=$hidden"
""",
    },
}
TOOLS_FILES = {
    "TOOLS_VERSION": "1.0\n",
    "lint.sh": '#!/bin/sh\necho "tools-lint $1"\n',
}


def tag(bare: Path, name: str, sha: str) -> None:
    subprocess.run(["git", "-C", str(bare), "tag", "-f", name, sha], check=True, timeout=30)


@dataclass
class CorpusPool:
    harness: Harness
    app_url: str
    sha: str
    #: file -> its pipeline id
    submitted: dict[str, str] = field(default_factory=dict)
    #: file -> why the pool refused it
    refused: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def corpus_pool(
    session_dir: Path, redis_server: RedisServer, busybox_image: str, git_server: GitServer
) -> Iterator[CorpusPool]:
    """A pool of its own with the corpus config and one linux worker; every E2E file is
    submitted at once (detached), so the runs share the worker's two slots."""
    actions_url = git_server.url("").rstrip("/")
    h = isolated_harness(
        session_dir / "corpus", redis_server, busybox_image, REDIS_DB, actions_url=actions_url
    )
    write_corpus_config(h.config, busybox_image)
    app = git_server.base / "corpus" / "app.git"
    sha = make_repo(app, APP_FILES)
    tag(app, "v" + VERSION, sha)
    tools = git_server.base / "corpus" / "tools.git"
    tag(tools, "v1", make_repo(tools, TOOLS_FILES))
    for name, files in ACTION_REPOS.items():
        repo = git_server.base / f"{name}.git"
        action_sha = make_repo(repo, files)
        tag(repo, "v1", action_sha)
        tag(repo, "v4", action_sha)
    try:
        h.start_worker("linux", concurrency=2)
        pool = CorpusPool(h, git_server.url("corpus/app.git"), sha)
        # What ``ci-pool run --detach`` does, in this process: a CLI start per file costs
        # seconds on a loaded machine, and the CLI's own checks are covered by validate.
        submitter = h.pool()
        for key in E2E:
            file, event = run_of(key)
            text = (CORPUS / file).read_text()
            try:
                row = submitter.submit_pipeline(text, file, pool.app_url, "main", event)
            except CIPoolError as exc:
                pool.refused[key] = str(exc)
            else:
                pool.submitted[key] = row.id
        yield pool
    finally:
        h.stop()


def finished_pipeline(pool: CorpusPool, pipeline_id: str, timeout: float = 150) -> Any:
    """The pipeline and its jobs once it has ended."""
    inspect = pool.harness.pool()
    deadline = time.monotonic() + timeout
    while True:
        row, jobs = inspect.pipeline(pipeline_id)
        if row.state != "running":
            return row, jobs
        assert time.monotonic() < deadline, [(j.key, j.state) for j in jobs]
        time.sleep(0.2)


@pytest.mark.parametrize("key", [expect_for(k, at_parse=False) for k in E2E])
def test_corpus_file_runs_end_to_end(corpus_pool: CorpusPool, key: str) -> None:
    assert key not in corpus_pool.refused, f"refused: {corpus_pool.refused[key]}"
    submitted = corpus_pool.submitted[key]
    promise = E2E[key]
    row, jobs = finished_pipeline(corpus_pool, submitted)
    forge = corpus_pool.app_url.removesuffix("/corpus/app.git")
    facts = {"sha": corpus_pool.sha, "version": VERSION, "forge": forge}
    by_key = {j.key: j for j in jobs}
    summary = {j.key: (j.state, j.reason) for j in jobs}
    store = corpus_pool.harness.pool().store
    if {k: j.state for k, j in by_key.items()} != promise.jobs:
        for job_key, job in by_key.items():
            if job.state != promise.jobs.get(job_key):
                summary[job_key] += (store.read_log(job.id)[-3000:],)
    assert {k: j.state for k, j in by_key.items()} == promise.jobs, summary
    assert row.state == promise.state, summary
    for job_key, lines in promise.lines.items():
        log = store.read_log(by_key[job_key].id)
        got = log.splitlines()
        for line in lines:
            assert line.format(**facts) in got, f"{job_key}: {line!r} not in log:\n{log}"
    for job_key, texts in promise.absent.items():
        log = store.read_log(by_key[job_key].id)
        for text in texts:
            assert text not in log, f"{job_key}: {text!r} must not be in the log"
    for job_key, texts in promise.shown.items():
        res = corpus_pool.harness.cli("show", by_key[job_key].id, "--json")
        assert res.returncode == 0, res.stderr
        shown = json.dumps(json.loads(res.stdout))
        for text in texts:
            assert json.dumps(text.format(**facts))[1:-1] in shown, f"{job_key}: {text!r} not shown"
