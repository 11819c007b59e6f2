"""How a workflow's errors read: one per cause, counted across matrix cells, no knock-on
errors, the pool's admission rules at the line they come from, tabs before comments."""

from __future__ import annotations

import textwrap

import pytest

from ci_pool.core.admission import Admission
from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.workflow.parser import parse_workflow, validate_workflow

CAPS = {n: Capability(**d) for n, d in merge_capabilities(None).items()}
POOL = Admission(CAPS, max_job_timeout=6 * 3600)


def found(text: str, pool: Admission = POOL) -> list[str]:
    return [str(e) for e in validate_workflow(textwrap.dedent(text), "wf.yml", pool)]


# -- one error per cause -----------------------------------------------------------------


def test_an_error_in_every_matrix_cell_is_reported_once_with_a_count() -> None:
    errors = found(
        """\
        jobs:
          build:
            runs-on: [self-hosted, macOS]
            strategy:
              matrix:
                py: ["3.9", "3.10", "3.11", "3.12"]
                os: [a, b, c, d, e]
            steps:
              - run: make
        """
    )
    assert errors == [
        "wf.yml:3:14: jobs.build.runs-on: no capability has the label macos; capabilities "
        "that exist: android, audit, deploy, flutter-web, iso, linux; to route it, map the "
        'label in ci-pool.toml: [capabilities.<name>] labels = ["macos"] (labels add to the '
        "capability's own) (in 20 matrix cells)"
    ]


def test_an_error_in_some_cells_names_them() -> None:
    errors = found(
        """\
        jobs:
          build:
            runs-on: linux
            strategy:
              matrix:
                shell: [bash, pwsh, sh]
                n: [1, 2]
            steps:
              - run: make
                shell: ${{ matrix.shell }}
        """
    )
    assert errors == [
        "wf.yml:10:16: jobs.build.steps[0].shell: 'pwsh' is not supported; ci-pool runs bash "
        "or sh (call other interpreters from the script) (in 2 matrix cells: pwsh, 1 | pwsh, 2)"
    ]


def test_an_error_in_one_cell_names_it() -> None:
    errors = found(
        """\
        jobs:
          build:
            runs-on: ${{ matrix.os }}
            strategy:
              matrix:
                os: [linux, gpu]
            steps: [{run: make}]
        """
    )
    assert len(errors) == 1
    assert errors[0].startswith("wf.yml:3:14: jobs.build.runs-on: no capability has the label")
    assert errors[0].endswith(" (matrix: gpu)")


def test_a_rejected_step_causes_no_knock_on_errors() -> None:
    errors = found(
        """\
        jobs:
          build:
            runs-on: linux
            outputs:
              version: ${{ steps.version.outputs.v }}
              node: ${{ steps.node.outputs.node-version }}
            steps:
              - id: node
                uses: actions/setup-node
              - id: version
                run: echo v=1 >> "$GITHUB_OUTPUT"
                shell: pwsh
              - run: echo ${{ steps.version.outputs.v }} ${{ steps.node.outputs.node-version }}
        """
    )
    assert len(errors) == 2, errors
    assert errors[0].startswith("wf.yml:9:15: jobs.build.steps[0].uses: 'actions/setup-node' is")
    assert errors[1].startswith("wf.yml:12:16: jobs.build.steps[1].shell: 'pwsh'")
    assert not any("no earlier step has id" in e for e in errors)


def test_steps_that_cannot_be_read_leave_step_references_unjudged() -> None:
    errors = found(
        """\
        jobs:
          build:
            runs-on: linux
            outputs:
              version: ${{ steps.version.outputs.v }}
            steps: make
        """
    )
    assert errors == [
        "wf.yml:6:12: jobs.build.steps: a job needs a list of steps (run: or uses: "
        "actions/checkout)"
    ]


def test_a_step_id_never_given_is_still_reported() -> None:
    errors = found(
        """\
        jobs:
          build:
            runs-on: linux
            outputs:
              version: ${{ steps.nope.outputs.v }}
            steps: [{id: real, run: make}]
        """
    )
    assert len(errors) == 1
    assert "no earlier step has id 'nope' (ids before this point: real)" in errors[0]


# -- admission at the line it comes from -------------------------------------------------


def test_timeout_minutes_over_the_limit_names_the_setting() -> None:
    errors = found(
        """\
        jobs:
          release:
            runs-on: linux
            timeout-minutes: 960
            steps: [{run: make}]
        """
    )
    assert errors == [
        "wf.yml:4:22: jobs.release.timeout-minutes: 57600 s (960 minutes) is above the pool's "
        "limit, max_job_timeout = 21600 s (360 minutes); ask for less, or have an operator "
        "raise max_job_timeout in ci-pool.toml"
    ]


def test_timeout_minutes_up_to_the_limit_is_kept_as_written() -> None:
    text = "jobs:\n  a:\n    runs-on: linux\n    timeout-minutes: 360\n    steps: [{run: x}]\n"
    assert parse_workflow(text, "wf.yml", POOL).jobs[0].spec.timeout == 360 * 60


def test_a_container_image_the_capability_refuses_is_an_error_at_container() -> None:
    text = """\
        jobs:
          lint:
            runs-on: linux
            container:
              image: python:3.12-slim
            steps: [{run: make}]
        """
    errors = found(text)
    assert errors == [
        "wf.yml:5:7: jobs.lint.container: capability 'linux' runs only its own image "
        "(ci-pool/linux:latest), not 'python:3.12-slim'; drop the image (container: in a "
        "workflow), or route the job to a capability with allow_container_override = true"
    ]
    allowing = {
        n: Capability(**d)
        for n, d in merge_capabilities({"linux": {"allow_container_override": True}}).items()
    }
    assert found(text, Admission(allowing)) == []


def test_default_capability_routes_self_hosted_only_jobs() -> None:
    text = "jobs:\n  a:\n    runs-on: self-hosted\n    steps: [{run: x}]\n"
    [error] = found(text)
    assert "needs a label besides self-hosted" in error
    assert 'default_capability = "<name>"' in error
    pipe = parse_workflow(text, "wf.yml", Admission(CAPS, default_capability="audit"))
    assert pipe.jobs[0].spec.capability == "audit"


@pytest.mark.parametrize(
    ("runs_on", "capability"),
    [
        ("[self-hosted, Linux, X64]", "linux"),
        ("[self-hosted, iso, privileged]", "iso"),
        ("[self-hosted, audit]", "audit"),
    ],
)
def test_labels_as_real_workflows_write_them_route(runs_on: str, capability: str) -> None:
    text = f"jobs:\n  a:\n    runs-on: {runs_on}\n    steps: [{{run: x}}]\n"
    assert parse_workflow(text, "wf.yml", POOL).jobs[0].spec.capability == capability


# -- YAML 1.2: tabs before comments ------------------------------------------------------


def test_tab_indented_comment_lines_are_comments() -> None:
    text = (
        "on: push\t# the trigger\n"
        "jobs:\n"
        "\t# a comment indented with a tab\n"
        "  build:\n"
        "    runs-on: linux\n"
        "  \t  # spaces and tabs\n"
        "\t\n"
        "    steps:\n"
        "      - run: make\t# build it\n"
        "\t# trailing\n"
    )
    pipe = parse_workflow(text, "wf.yml", POOL)
    assert [s.run for s in pipe.jobs[0].spec.steps] == ["make"]


def test_positions_after_a_tab_comment_line_stay_exact() -> None:
    text = "jobs:\n\t# note\n  build:\n    runs-on: gpu\n    steps: [{run: make}]\n"
    [error] = validate_workflow(text, "wf.yml", POOL)
    assert (error.line, error.column) == (4, 14)


def test_scripts_keep_their_tabs() -> None:
    text = (
        "jobs:\n  build:\n    runs-on: linux\n    steps:\n      - run: |\n"
        "          cat <<-EOF\n          \t# tab-indented text\n          EOF\n"
        "\t# after the script\n"
    )
    [step] = parse_workflow(text, "wf.yml", POOL).jobs[0].spec.steps
    assert step.run == "cat <<-EOF\n\t# tab-indented text\nEOF\n"


def test_tabs_as_indentation_are_still_refused() -> None:
    text = "jobs:\n\tbuild:\n    runs-on: linux\n"
    [error] = validate_workflow(text, "wf.yml", POOL)
    assert (error.line, error.column) == (2, 1)
    assert "not valid YAML" in str(error)
