"""Workflow files: the corpus under workflows/ parses to the expected job graphs, and every
unsupported or invalid construct is an error at its line and column, naming the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.specs import CheckoutSpec
from ci_pool.core.workflow.expressions import condition, render
from ci_pool.core.workflow.parser import (
    Pipeline,
    PipelineJob,
    WorkflowErrors,
    parse_workflow,
    topological_order,
    validate_workflow,
)
from ci_pool.exceptions import InputError, WorkflowError

WORKFLOWS = Path(__file__).parent / "workflows"
# The corpus has container: jobs; linux lets a job name its image here.
CAPS = {
    n: Capability(**d)
    for n, d in merge_capabilities({"linux": {"allow_container_override": True}}).items()
}
CAP_NAMES = "android, audit, deploy, flutter-web, iso, linux"


def load(name: str) -> Pipeline:
    return parse_workflow((WORKFLOWS / name).read_text(), name, CAPS)


def parse(text: str) -> Pipeline:
    return parse_workflow(textwrap.dedent(text), "wf.yml", CAPS)


def errors(text: str) -> list[WorkflowError]:
    return validate_workflow(textwrap.dedent(text), "wf.yml", CAPS)


def one_error(text: str) -> WorkflowError:
    found = errors(text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def graph(pipeline: Pipeline) -> dict[str, tuple[str, ...]]:
    return {job.key: job.needs for job in pipeline.jobs}


# -- the corpus --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_corpus_is_valid(name: str) -> None:
    assert validate_workflow((WORKFLOWS / name).read_text(), name, CAPS) == []


def checkouts(job: PipelineJob) -> list[CheckoutSpec]:
    """The job's checkout steps, in order."""
    return [s.checkout for s in job.spec.steps if s.checkout is not None]


def test_release_pipeline() -> None:
    p = load("release.yml")
    assert p.name == "release"
    assert p.on == {"push": {"tags": ["v*"]}, "workflow_dispatch": None}
    assert graph(p) == {
        "linux": (),
        "android": ("linux",),
        "flutter-web": ("linux",),
        "iso": ("android", "flutter-web"),
        "deploy": ("iso",),
    }
    assert {j.key: j.spec.capability for j in p.jobs} == {
        "linux": "linux",
        "android": "android",
        "flutter-web": "flutter-web",
        "iso": "iso",
        "deploy": "deploy",
    }
    linux = p.job("linux")
    assert linux.spec.name == "Linux build and tests"
    assert linux.spec.labels == ("self-hosted", "linux", "x64")
    assert linux.spec.timeout == 30 * 60
    assert checkouts(linux) == [CheckoutSpec(fetch_depth=0, submodules=True)]
    assert linux.outputs == {"version": "${{ steps.version.outputs.version }}"}
    assert linux.spec.env == {"APP_NAME": "demo-app", "RELEASE_CHANNEL": "stable"}
    # The checkout is a step of its own, at its place in the file.
    assert [s.name for s in linux.spec.steps] == [
        "Check out",
        'Run echo "version=$(cat VERSION)" >> "$GITHUB_OUTPUT"',
        "Unit tests",
    ]
    assert linux.spec.steps[1].id == "version"
    assert linux.spec.steps[2].run == "make deps\nmake test\n"
    assert linux.spec.steps[2].env == {"GOFLAGS": "-mod=vendor"}
    assert p.job("android").spec.env["VERSION"] == "${{ needs.linux.outputs.version }}"
    assert p.job("android").need_ids == ("linux",)
    assert checkouts(p.job("android")) == [CheckoutSpec(lfs=True)]
    assert p.job("iso").spec.steps[1].timeout == 100 * 60
    deploy = p.job("deploy")
    assert deploy.if_expr == "startsWith(github.ref, 'refs/tags/v')"
    assert deploy.spec.steps[1].name == "Ship ${{ github.ref }}"
    assert [j.key for j in topological_order(p)] == [
        "linux",
        "android",
        "flutter-web",
        "iso",
        "deploy",
    ]


def test_matrix_workflow_graph_and_cells() -> None:
    p = load("matrix.yml")
    fruit = [j.key for j in p.cells("fruit")]
    assert fruit == [
        "fruit (apple, cat, pink, circle)",
        "fruit (apple, dog, green, circle)",
        "fruit (pear, cat, pink)",
        "fruit (pear, dog, green)",
        "fruit (banana)",
        "fruit (banana, cat)",
    ]
    assert p.job("fruit (pear, cat, pink)").spec.steps[0].run == 'echo "pear cat pink "'
    tests = p.cells("test")
    assert [j.key for j in tests] == [
        "test (linux, 3.11, false)",
        "test (linux, 3.12, false)",
        "test (android, 3.12, false)",
        "test (linux, 3.13, true)",
    ]
    assert [j.spec.capability for j in tests] == ["linux", "linux", "android", "linux"]
    assert [j.continue_on_error for j in tests] == [False, False, False, True]
    assert tests[0].spec.name == "test 3.11 on linux"  # names that show the matrix get no suffix
    assert all(j.fail_fast is False and j.max_parallel == 2 for j in tests)
    assert {j.matrix_group for j in tests} == {"test"}
    assert tests[0].spec.steps[1].run == "tox -e py3.11" and tests[0].spec.steps[1].env == {
        "PY": "3.11"
    }
    # The matrix part of an if: is decided per cell; the rest is left for the runtime.
    assert [j.spec.steps[2].if_expr for j in tests] == [
        "github.event_name == 'push'",
        "github.event_name == 'push'",
        "false",
        "github.event_name == 'push'",
    ]
    packages = p.cells("package")
    assert [j.key for j in packages] == ["package (deb, amd64)", "package (rpm, x86_64)"]
    assert packages[0].needs == tuple(j.key for j in tests)  # every cell of the needed job
    assert packages[1].spec.steps[0].run == "make rpm ARCH=x86_64"
    assert packages[0].fail_fast is True and packages[0].max_parallel is None


def test_containers() -> None:
    p = load("containers.yml")
    lint, db = p.job("lint"), p.job("db-tests")
    assert (lint.spec.image, lint.container_options) == ("python:3.12-slim", None)
    assert (db.spec.image, db.container_options) == (
        "ghcr.io/example/ci-postgres:16",
        "--cpus 2 --memory 2g",
    )
    assert db.spec.env["PGDATA"] == "/tmp/pg"  # container env, under the job's own
    assert [j.spec.image for j in p.cells("distro")] == [
        "debian:12",
        "alpine:3.20",
    ]
    lint_step, db_step = lint.spec.steps[0], db.spec.steps[0]
    assert (lint_step.shell, lint_step.working_directory) == ("sh", "app")  # defaults.run
    assert (db_step.shell, db_step.working_directory) == ("bash", "tests/db")
    assert graph(p) == {
        "lint": (),
        "db-tests": (),
        "distro (debian:12)": (),
        "distro (alpine:3.20)": (),
    }


def test_conditions() -> None:
    p = load("conditions.yml")
    assert graph(p) == {
        "build": (),
        "publish": ("build",),
        "notify": ("build", "publish"),
        "never": (),
    }
    build = p.job("build")
    assert [s.if_expr for s in build.spec.steps] == [
        None,
        "steps.compile.outcome == 'success'",
        "failure()",
        "always()",
    ]
    assert build.spec.steps[0].continue_on_error is True
    assert p.job("notify").if_expr == "always()"
    assert p.job("never").if_expr == "false"
    publish = p.job("publish")
    ctx = {"needs": {"build": {"result": "success", "outputs": {"artifact": "app.tar"}}}}
    assert publish.if_expr is not None and condition(publish.if_expr, ctx)
    assert render(publish.spec.steps[0].run, ctx) == "./publish.sh app.tar"


def test_gitea_style_file() -> None:
    p = load("gitea.yml")
    assert p.on == ["push", "pull_request"]
    assert graph(p) == {"check": (), "release": ("check",)}
    check = p.job("check")
    assert checkouts(check) == [CheckoutSpec(fetch_depth=1, ref="main")]
    assert [s.shell for s in check.spec.steps[1:]] == ["sh", "bash"]
    assert check.spec.steps[2].env == {"CGO_ENABLED": "0"}
    assert check.spec.env == {"GOPROXY": "https://proxy.golang.org"}
    release = p.job("release")
    assert checkouts(release) == [CheckoutSpec()]
    ctx = {"github": {"sha": "f00", "repository": "org/app"}}
    assert render(release.spec.steps[1].run, ctx) == 'echo "releasing f00 of org/app"'


# -- YAML --------------------------------------------------------------------------------

MINIMAL = """\
jobs:
  build:
    runs-on: linux
    steps:
      - run: make
"""


def test_on_is_a_key_not_a_boolean() -> None:
    p = parse("on: push\n" + MINIMAL)
    assert p.on == "push"


def test_yaml_1_2_scalars() -> None:
    p = parse(
        """\
        jobs:
          build:
            runs-on: linux
            strategy:
              matrix:
                answer: [yes, no, on, off]
                when: [2024-01-02]
                clock: [1:30]
                octal: [017]
            steps:
              - run: make
        """
    )
    assert p.jobs[0].matrix == {
        "answer": "yes",
        "when": "2024-01-02",
        "clock": "1:30",
        "octal": "017",
    }


def test_duplicate_key() -> None:
    err = one_error(MINIMAL + "  build:\n    runs-on: linux\n    steps: [{run: x}]\n")
    assert (err.line, err.column) == (6, 3)
    assert "build: duplicate key (first given on line 2)" in str(err)


def test_merge_keys_are_not_supported() -> None:
    err = one_error(MINIMAL + "    <<: {timeout-minutes: 5}\n")
    assert (err.line, err.column) == (6, 5)
    assert "jobs.build.<<: unknown key" in str(err)


def test_yaml_syntax_error() -> None:
    err = one_error("jobs:\n  build: [\n")
    assert err.line == 3
    assert "not valid YAML" in str(err)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("- a\n- b\n", "must be a mapping with jobs"),
        ("name: x\n", "jobs: a workflow needs a mapping"),
        ("jobs: {}\n", "jobs: a workflow needs a mapping"),
    ],
)
def test_not_a_workflow(text: str, words: str) -> None:
    assert words in str(one_error(text))


# -- unsupported and invalid keys --------------------------------------------------------

# Each case: a workflow, the (line, column) of the one error, and words the error must have.
CASES = {
    "service volumes": (
        MINIMAL + "    services:\n      db:\n        image: postgres\n        volumes: [a]\n",
        (9, 9),
        ["jobs.build.services.db.volumes:", "not supported on services", "A service may have"],
    ),
    "job defaults": (MINIMAL + "    defaults: {}\n", (6, 5), ["top level only"]),
    "reusable workflow": (
        "jobs:\n  call:\n    uses: org/repo/.github/workflows/ci.yml@main\n    runs-on: linux\n"
        "    steps: [{run: x}]\n",
        (3, 5),
        ["jobs.call.uses:", "reusable workflows are not supported"],
    ),
    "action without a ref": (
        MINIMAL + "      - uses: actions/setup-node\n        with: {node-version: 20}\n",
        (6, 15),
        ["jobs.build.steps[1].uses:", "'actions/setup-node' is not an action reference"],
    ),
    "docker action with a bad image": (
        MINIMAL + "      - uses: docker://Alpine 3\n",
        (6, 15),
        ["'docker://Alpine 3': not an image name"],
    ),
    "unknown step key": (
        MINIMAL + "        timeout: 5\n",
        (6, 9),
        ["jobs.build.steps[0].timeout: unknown key", "timeout-minutes"],
    ),
    "unknown job key": (MINIMAL + "    runs_on: linux\n", (6, 5), ["jobs.build.runs_on"]),
    "container credentials in clear": (
        MINIMAL + "    container:\n      image: x\n      credentials: {username: u, password: p}\n",
        (8, 20),
        ["jobs.build.container.credentials.password:", "${{ secrets.NAME }}"],
    ),
    "container ports": (
        MINIMAL + "    container:\n      image: x\n      ports: [80]\n",
        (8, 7),
        ["container.ports:"],
    ),
    "strategy key": (
        MINIMAL + "    strategy:\n      matrix: {a: [1]}\n      retries: 2\n",
        (8, 7),
        ["jobs.build.strategy.retries: unknown key", "matrix, fail-fast, max-parallel"],
    ),
    "defaults key": ("defaults:\n  shell: bash\n" + MINIMAL, (2, 3), ["defaults.shell"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unsupported(case: str) -> None:
    text, (line, column), words = CASES[case]
    err = one_error(text)
    assert (err.file, err.line, err.column) == ("wf.yml", line, column), str(err)
    for word in words:
        assert word in str(err)
    assert str(err).startswith(f"wf.yml:{line}:{column}: ")


def step(lines: str) -> str:
    """MINIMAL with a second step made of ``lines`` (its first line starts at line 6)."""
    return MINIMAL + textwrap.indent(textwrap.dedent(lines), "      ")


# Errors inside steps and values: (step lines, (line, column), words).
STEP_CASES = {
    "secrets whole": (
        "- run: make\n  env:\n    ALL: ${{ toJSON(secrets) }}\n",
        (8, 27),
        ["steps[1].env.ALL:", "use secrets.NAME"],
    ),
    "unknown context": ("- run: echo ${{ foo.bar }}\n", (6, 23), ["unknown context 'foo'"]),
    "github property": (
        "- run: echo ${{ github.actorr }}\n",
        (6, 23),
        ["'github.actorr'", "github.ref", "github.repository_owner"],
    ),
    "runner property": ("- run: echo ${{ runner.cpu }}\n", (6, 23), ["runner.os, runner.temp"]),
    "unknown function": (
        "- run: echo ${{ toYAML('[1]') }}\n",
        (6, 23),
        ["toYAML() is not supported", "fromJSON, hashFiles"],
    ),
    "status outside if": ("- run: echo ${{ success() }}\n", (6, 23), ["only in if:"]),
    "arity": ("- run: echo ${{ contains('a') }}\n", (6, 23), ["contains() takes 2 arguments"]),
    "format string": ("- run: echo ${{ format('{1}', 'a') }}\n", (6, 23), ["uses {1}"]),
    "double quotes": ('- if: github.ref == "main"\n  run: x\n', (6, 27), ["single quotes"]),
    "unclosed": ("- run: echo ${{ github.ref\n", (6, 19), ["not closed"]),
    "mixed if": (
        "- if: ${{ github.ref }} == 'x'\n  run: x\n",
        (6, 13),
        ["whole condition inside one ${{ }}"],
    ),
    "later step": (
        "- if: steps.late.outcome == 'success'\n  run: x\n- id: late\n  run: y\n",
        (6, 13),
        ["no earlier step has id 'late'"],
    ),
    "step own outputs": (
        "- id: me\n  run: echo ${{ steps.me.outputs.x }}\n",
        (7, 23),
        ["no earlier step has id 'me'"],
    ),
    "needs not needed": (
        "- run: echo ${{ needs.other.result }}\n",
        (6, 23),
        ["'other' is not in this job's needs"],
    ),
    "matrix without matrix": (
        "- run: echo ${{ matrix.os }}\n",
        (6, 23),
        ["has no strategy.matrix"],
    ),
    "shell": (
        "- run: Write-Host hi\n  shell: pwsh\n",
        (7, 16),
        ["'pwsh' is not supported", "bash or sh"],
    ),
    "python shell": ("- run: print(1)\n  shell: python\n", (7, 16), ["'python'"]),
    "with on run": (
        "- run: x\n  with: {a: 1}\n",
        (7, 9),
        ["with: belongs to uses: steps"],
    ),
    "no run": ("- name: nothing\n", (6, 9), ["steps[1]: a step needs run:"]),
    "empty run": ("- run: ''\n", (6, 14), ["must be a non-empty script"]),
    "checkout with token": (
        "- uses: actions/checkout@v4\n  with:\n    token: ${{ secrets.X }}\n",
        (8, 11),
        ["with.token: not supported by the built-in checkout", "repository, ref, path"],
    ),
    "checkout path out of the workspace": (
        "- uses: actions/checkout@v4\n  with: {path: ../../x}\n",
        (7, 22),
        ["with.path: '../../x' climbs out of the workspace"],
    ),
    "checkout absolute path": (
        "- uses: actions/checkout@v4\n  with: {path: /etc}\n",
        (7, 22),
        ["with.path: '/etc' is absolute"],
    ),
    "checkout shell": (
        "- uses: actions/checkout@v4\n  shell: sh\n",
        (7, 9),
        ["steps[1].shell: the built-in checkout takes only name, id, uses, with, if"],
    ),
    "checkout depth": (
        "- uses: actions/checkout@v4\n  with: {fetch-depth: -1}\n",
        (7, 29),
        ["fetch-depth: must be a whole number"],
    ),
    "checkout ref": (
        "- uses: actions/checkout@v4\n  with: {ref: --upload-pack=x}\n",
        (7, 21),
        ["with.ref: must not start with '-'"],
    ),
    "checkout submodules": (
        "- uses: actions/checkout@v4\n  with: {submodules: maybe}\n",
        (7, 28),
        ["true, false or recursive"],
    ),
    "timeout": ("- run: x\n  timeout-minutes: soon\n", (7, 26), ["positive number of minutes"]),
    "continue-on-error": ("- run: x\n  continue-on-error: maybe\n", (7, 28), ["true or false"]),
    "env name": (
        "- run: x\n  env: {MY-VAR: 1}\n",
        (7, 15),
        ["env.MY-VAR: not a valid variable name"],
    ),
    "reserved env": (
        "- run: x\n  env: {CI_POOL_JOB_ID: 1}\n",
        (7, 15),
        ["CI_POOL_ prefix is reserved"],
    ),
    "env object": (
        "- run: x\n  env: {A: {b: 1}}\n",
        (7, 18),
        ["must be a string, number or boolean"],
    ),
    "step id": ("- id: 1st\n  run: x\n", (6, 13), ["steps[1].id: must start with a letter"]),
    "duplicate step id": (
        "- id: a\n  run: x\n- id: a\n  run: y\n",
        (8, 13),
        ["'a' is already the id of an earlier step"],
    ),
}


@pytest.mark.parametrize("case", sorted(STEP_CASES))
def test_step_errors(case: str) -> None:
    lines, (line, column), words = STEP_CASES[case]
    err = one_error(step(lines))
    assert (err.line, err.column) == (line, column), str(err)
    for word in words:
        assert word in str(err), str(err)


def test_error_in_a_block_scalar_points_into_the_block() -> None:
    err = one_error(step("- run: |\n    make\n    echo ${{ runner.x }}\n"))
    assert (err.line, err.column) == (8, 20)


def test_errors_name_the_right_line_in_a_job() -> None:
    err = one_error(MINIMAL + "    timeout-minutes: 0\n")
    assert (err.line, err.column) == (6, 22)
    assert "jobs.build.timeout-minutes: must be a positive number" in str(err)


# -- runs-on -----------------------------------------------------------------------------


def runs_on(value: str) -> str:
    return f"jobs:\n  build:\n    runs-on: {value}\n    steps: [{{run: make}}]\n"


def test_runs_on_unknown_label_lists_the_capabilities() -> None:
    err = one_error(runs_on("ubuntu-latest"))
    assert (err.line, err.column) == (3, 14)
    assert "jobs.build.runs-on: no capability has the label ubuntu-latest" in str(err)
    assert "no GitHub-hosted runners" in str(err)
    assert f"capabilities that exist: {CAP_NAMES}" in str(err)


@pytest.mark.parametrize(
    ("value", "capability"),
    [("linux", "linux"), ("[self-hosted, x64]", "linux"), ("[flutter]", "flutter-web"),
     ("flutter-web", "flutter-web"), ("[self-hosted, iso]", "iso")],
)  # fmt: skip
def test_runs_on_routes_by_label(value: str, capability: str) -> None:
    assert parse(runs_on(value)).jobs[0].spec.capability == capability


def test_runs_on_needs_more_than_self_hosted() -> None:
    assert "needs a label besides self-hosted" in str(one_error(runs_on("self-hosted")))


def test_runs_on_ambiguous_labels() -> None:
    caps = {n: Capability(**d) for n, d in merge_capabilities({"arm": {"labels": ["x64"],
            "image": "arm:1"}}).items()}  # fmt: skip
    [err] = validate_workflow(runs_on("x64"), "wf.yml", caps)
    assert "match several capabilities (arm, linux)" in str(err)


def test_runs_on_must_be_known_when_parsing() -> None:
    err = one_error(runs_on("${{ github.ref }}"))
    assert (err.line, err.column) == (3, 18)
    assert "must be known when the workflow is parsed" in str(err)


def test_runs_on_group_and_missing() -> None:
    found = [str(e) for e in errors(runs_on("{group: big, labels: [linux]}"))]
    assert found == [
        "wf.yml:3:22: jobs.build.runs-on.group: no runner group 'big'; groups that exist: "
        "none (set runner_groups in the pool's settings); or send the job by name with "
        "runner: 'GLOB'"
    ]
    err = one_error("jobs:\n  build:\n    steps: [{run: make}]\n")
    assert (err.line, err.column) == (2, 3)
    assert f"jobs.build.runs-on: is required; use the label of a capability: {CAP_NAMES}" in str(
        err
    )


def test_runs_on_from_the_matrix_names_the_cell() -> None:
    found = errors(
        """\
        jobs:
          build:
            runs-on: ${{ matrix.os }}
            strategy:
              matrix:
                os: [linux, windows, macos]
            steps: [{run: make}]
        """
    )
    assert sorted(
        (e.line, e.column, str(e).split("(matrix: ")[1].split(")")[0]) for e in found
    ) == [
        (3, 14, "macos"),
        (3, 14, "windows"),
    ]


# -- matrix ------------------------------------------------------------------------------


def matrix(body: str, extra: str = "") -> str:
    return (
        "jobs:\n  build:\n    runs-on: linux\n    strategy:\n      matrix:\n"
        + textwrap.indent(textwrap.dedent(body), "        ")
        + extra
        + "    steps:\n      - run: echo ${{ matrix.a }}\n"
    )


def test_matrix_exclude_key_must_be_a_matrix_key() -> None:
    err = one_error(matrix("a: [1, 2]\nexclude:\n  - b: 1\n"))
    assert (err.line, err.column) == (8, 13)
    assert "exclude[0].b: 'b' is not a key of the matrix; its keys are: a" in str(err)


def test_matrix_all_excluded() -> None:
    err = one_error(matrix("a: [1]\nexclude:\n  - a: 1\n"))
    assert (err.line, err.column) == (6, 9)
    assert "every combination is excluded" in str(err)


def test_matrix_limit() -> None:
    seven, six = "[1, 2, 3, 4, 5, 6, 7]", "[1, 2, 3, 4, 5, 6]"
    err = one_error(matrix(f"a: {seven}\nb: {six}\nc: {seven}\n"))
    assert (err.line, err.column) == (6, 9)
    assert "jobs.build.strategy.matrix: 294 combinations; the limit is 256" in str(err)
    eight = str(list(range(8)))
    assert len(parse(matrix(f"a: [1, 2, 3, 4]\nb: {eight}\nc: {eight}\n")).jobs) == 256


@pytest.mark.parametrize(
    ("body", "extra", "words"),
    [
        ("a: []\n", "", "matrix.a: must be a non-empty list of values"),
        ("a: 1\n", "", "matrix.a: must be a non-empty list of values"),
        ("a: ['${{ github.ref }}']\n", "", "expressions are not supported in a matrix"),
        ("a: [1]\ninclude: {a: 2}\n", "", "include: must be a list of mappings"),
        ("a: [1]\n", "      max-parallel: 0\n", "max-parallel: must be a whole number"),
        ("a: [1]\n", "      fail-fast: maybe\n", "fail-fast: must be true or false"),
    ],
)
def test_matrix_problems(body: str, extra: str, words: str) -> None:
    # One error each: an invalid axis is not reported again where it is used.
    assert words in str(one_error(matrix(body, extra)))


def test_matrix_from_an_expression_may_read_only_needs_github_vars_inputs() -> None:
    text = matrix("a: [1]\n").replace("matrix:\n        a: [1]", "matrix: ${{ fromJSON(x) }}")
    err = one_error(text)
    assert (err.line, err.column) == (5, 28)
    assert "jobs.build.strategy.matrix: unknown context 'x'" in str(err)


def test_matrix_key_used_but_not_defined() -> None:
    err = one_error(matrix("a: [1]\n").replace("matrix.a", "matrix.b"))
    assert "'matrix.b': the matrix has no key 'b'; its keys are: a" in str(err)


def test_matrix_values_may_be_objects() -> None:
    p = parse(
        """\
        jobs:
          build:
            runs-on: linux
            strategy:
              matrix:
                cfg: [{os: linux, cc: gcc}, {os: linux, cc: clang}]
            steps:
              - run: make CC=${{ matrix.cfg.cc }}
              - run: echo ${{ matrix.cfg }}
        """
    )
    assert [j.key for j in p.jobs] == [
        'build ({"os":"linux","cc":"gcc"})',
        'build ({"os":"linux","cc":"clang"})',
    ]
    assert p.jobs[1].spec.steps[0].run == "make CC=clang"
    # An object has no literal form: the runtime renders it from the job's matrix.
    assert p.jobs[1].spec.steps[1].run == "echo ${{ matrix.cfg }}"
    assert render(p.jobs[1].spec.steps[1].run, {"matrix": p.jobs[1].matrix}) == (
        'echo {"os":"linux","cc":"clang"}'
    )


def test_job_name_without_matrix_gets_the_values_appended() -> None:
    p = parse(matrix("a: [1, 2]\n").replace("runs-on: linux", "runs-on: linux\n    name: Build"))
    assert [j.spec.name for j in p.jobs] == ["Build (1)", "Build (2)"]


# -- needs -------------------------------------------------------------------------------


def jobs(*specs: str) -> str:
    """A workflow of jobs given as "id" or "id: need1 need2"."""
    out = "jobs:\n"
    for spec in specs:
        job_id, _, needs = spec.partition(":")
        out += f"  {job_id}:\n    runs-on: linux\n"
        if needs.split():
            out += f"    needs: [{', '.join(needs.split())}]\n"
        out += "    steps: [{run: make}]\n"
    return out


def test_missing_need() -> None:
    err = one_error(jobs("a", "b: a nope"))
    assert (err.line, err.column) == (7, 16)
    assert "jobs.b.needs: job 'nope' does not exist; jobs in this file: a, b" in str(err)


def test_self_need() -> None:
    assert "cannot need itself" in str(one_error(jobs("a: a")))


def test_cycle_names_the_jobs_at_the_needs_line() -> None:
    err = one_error(jobs("a: c", "b: a", "c: b", "d: a"))
    assert (err.line, err.column) == (4, 5)
    assert "jobs.a.needs: jobs a -> c -> b -> a need each other in a cycle" in str(err)


def test_two_cycles_are_two_errors() -> None:
    found = errors(jobs("a: b", "b: a", "c: d", "d: c"))
    assert [str(e).split(": ", 1)[1].split(" need")[0] for e in found] == [
        "jobs.a.needs: jobs a -> b -> a",
        "jobs.c.needs: jobs c -> d -> c",
    ]


def test_needs_outputs_must_be_declared() -> None:
    text = jobs("a", "b: a").replace("steps: [{run: make}]\n", "steps: [{run: make}]\n", 1)
    text += "    env:\n      V: ${{ needs.a.outputs.version }}\n"
    err = one_error(text)
    assert "job 'a' declares no such output (its outputs: none)" in str(err)


def test_needs_as_a_string_and_duplicates() -> None:
    p = parse(jobs("a", "b").replace("  b:\n", "  b:\n    needs: a\n"))
    assert p.job("b").needs == ("a",)
    p = parse(jobs("a", "b: a a"))
    assert p.job("b").needs == ("a",)


# -- all errors, one exception -----------------------------------------------------------


def test_every_error_of_a_file_is_reported_in_file_order() -> None:
    text = """\
    permissions: admin
    jobs:
      build:
        runs-on: ubuntu-latest
        services: {db: {image: postgres, volumes: [a]}}
        steps:
          - uses: actions/setup-node
          - run: echo ${{ runner.x }}
            bogus: 1
      test:
        needs: [build, lint]
        runs-on: linux
        steps: [{run: make}]
    """
    found = errors(text)
    assert [(e.line, e.column) for e in found] == [
        (1, 14),
        (4, 14),
        (5, 38),
        (7, 15),
        (8, 23),
        (9, 9),
        (11, 20),
    ]
    with pytest.raises(WorkflowErrors) as info:
        parse(text)
    exc = info.value
    assert isinstance(exc, InputError) and exc.exit_code == 2
    assert [str(e) for e in exc.errors] == [str(e) for e in found]
    assert str(exc).splitlines() == [str(e) for e in found]
    assert all(line.startswith("wf.yml:") for line in str(exc).splitlines())


def test_a_job_with_only_a_checkout_has_no_run_steps() -> None:
    err = one_error(MINIMAL.replace("- run: make", "- uses: actions/checkout@v4"))
    assert (err.line, err.column) == (5, 7)
    assert "jobs.build.steps: the job has no run: or uses: steps" in str(err)


def test_defaults_shell() -> None:
    err = one_error("defaults:\n  run:\n    shell: pwsh\n" + MINIMAL)
    assert (err.line, err.column) == (3, 12)
    assert "defaults.run.shell: 'pwsh' is not supported" in str(err)


def test_workflow_env_may_use_github_only() -> None:
    err = one_error("env:\n  A: ${{ matrix.x }}\n" + MINIMAL)
    assert (err.line, err.column) == (2, 10)
    assert "matrix is not available here; use github" in str(err)
    assert parse("env:\n  REF: ${{ github.ref }}\n" + MINIMAL).jobs[0].spec.env == {
        "REF": "${{ github.ref }}"
    }


def test_job_id_must_be_an_identifier() -> None:
    err = one_error(MINIMAL.replace("build:", "1build:"))
    assert (err.line, err.column) == (2, 3)
    assert "jobs.1build: job ids start with a letter" in str(err)


def test_if_literals_and_defaults() -> None:
    p = parse(MINIMAL.replace("runs-on: linux", "runs-on: linux\n    if: true"))
    assert p.jobs[0].if_expr == "true"
    p = parse(MINIMAL + "        if: ${{ github.ref == 'refs/heads/main' }}\n")
    assert p.jobs[0].spec.steps[0].if_expr == "github.ref == 'refs/heads/main'"
    assert p.jobs[0].spec.steps[0].name == "Run make"
    assert p.jobs[0].if_expr is None and p.jobs[0].spec.checkout == CheckoutSpec()
    assert not p.jobs[0].spec.checks_out_in_steps


def test_step_timeouts_and_flags_from_the_matrix() -> None:
    p = parse(
        """\
        jobs:
          build:
            runs-on: linux
            strategy:
              matrix:
                minutes: [1.5, "10"]
                flaky: [true]
            steps:
              - run: make
                timeout-minutes: ${{ matrix.minutes }}
                continue-on-error: ${{ matrix.flaky }}
        """
    )
    assert [j.spec.steps[0].timeout for j in p.jobs] == [90, 600]
    assert all(j.spec.steps[0].continue_on_error for j in p.jobs)


# -- topological order -------------------------------------------------------------------


@st.composite
def _dags(draw: st.DrawFn) -> list[tuple[str, list[str], int]]:
    """Jobs (id, needs, matrix size) where needs only point at earlier jobs, then shuffled."""
    count = draw(st.integers(1, 8))
    specs = []
    for i in range(count):
        needs = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        specs.append((f"j{i}", [f"j{n}" for n in needs], draw(st.integers(0, 3))))
    return draw(st.permutations(specs))


@settings(max_examples=60, deadline=None)
@given(_dags())
def test_topological_order_puts_every_job_after_its_needs(
    specs: list[tuple[str, list[str], int]],
) -> None:
    text = "jobs:\n"
    for job_id, needs, size in specs:
        text += f"  {job_id}:\n    runs-on: linux\n"
        if needs:
            text += f"    needs: [{', '.join(needs)}]\n"
        if size:
            text += f"    strategy:\n      matrix:\n        n: {list(range(size))}\n"
        text += "    steps: [{run: make}]\n"
    p = parse_workflow(text, "wf.yml", CAPS)
    order = [j.key for j in topological_order(p)]
    assert sorted(order) == sorted(j.key for j in p.jobs)
    position = {key: i for i, key in enumerate(order)}
    for job in p.jobs:
        assert all(position[need] < position[job.key] for need in job.needs)
    for job_id, needs, _ in specs:
        cells = p.cells(job_id)
        assert {n for c in cells for n in c.needs} == {c.key for n in needs for c in p.cells(n)}


# -- robustness --------------------------------------------------------------------------

_CORPUS = {p.name: p.read_text().splitlines() for p in sorted(WORKFLOWS.glob("*.yml"))}
_REPLACEMENTS = ["", " []", " {}", " 1", " null", " true", " [a, [b]]", " {x: {y: 1}}",
                 " '${{ matrix.x }}'", " ${{", " 'a: b'", " *nope", " |\n  ${{ x."]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(_CORPUS)), st.data())
def test_broken_files_are_reported_never_raised(name: str, data: st.DataObject) -> None:
    lines = list(_CORPUS[name])
    index = data.draw(st.integers(0, len(lines) - 1))
    head = lines[index].split(":", 1)[0]
    replacement = data.draw(st.sampled_from([None, *_REPLACEMENTS]))
    lines[index : index + 1] = [] if replacement is None else [head + ":" + replacement]
    found = validate_workflow("\n".join(lines) + "\n", name, CAPS)
    assert all(isinstance(e, WorkflowError) and e.line >= 0 for e in found)
