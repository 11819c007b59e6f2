"""Checkout steps as read from a workflow: each input of actions/checkout ci-pool takes,
several checkouts per job in file order, and the errors for what it refuses."""

from __future__ import annotations

import textwrap

import pytest

from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.specs import CheckoutSpec, StepSpec
from ci_pool.core.workflow.expressions import render
from ci_pool.core.workflow.parser import parse_workflow, validate_workflow

CAPS = {n: Capability(**d) for n, d in merge_capabilities(None).items()}


def steps(body: str) -> tuple[StepSpec, ...]:
    text = "jobs:\n  build:\n    runs-on: linux\n    steps:\n" + textwrap.indent(
        textwrap.dedent(body), "      "
    )
    return parse_workflow(text, "wf.yml", CAPS).jobs[0].spec.steps


def errors(body: str) -> list[str]:
    text = "jobs:\n  build:\n    runs-on: linux\n    steps:\n" + textwrap.indent(
        textwrap.dedent(body), "      "
    )
    return [str(e) for e in validate_workflow(text, "wf.yml", CAPS)]


def test_the_design_documents_checkout_block() -> None:
    (first, run) = steps(
        """\
        - uses: actions/checkout@v4
          with:
            repository: org/app
            filter: blob:none
            ref: ${{ github.ref }}
        - run: make
        """
    )
    assert first.checkout == CheckoutSpec(
        repository="org/app", filter="blob:none", ref="${{ github.ref }}"
    )
    assert first.name == "Checkout org/app"
    assert run.checkout is None and run.run == "make"
    # The ref is a template the runner renders.
    assert render(first.checkout.ref or "", {"github": {"ref": "refs/tags/v1"}}) == "refs/tags/v1"


def test_every_input_is_read() -> None:
    (step, _run) = steps(
        """\
        - id: lib
          name: Library
          if: github.event_name == 'push'
          continue-on-error: true
          uses: actions/checkout@v4
          with:
            repository: org/lib
            ref: release/1.2
            path: deps/lib
            fetch-depth: 0
            filter: tree:0
            sparse-checkout: |
              docs
              src/core
            sparse-checkout-cone-mode: false
            submodules: recursive
            lfs: false
            clean: false
            persist-credentials: true
        - run: make
        """
    )
    assert step.checkout == CheckoutSpec(
        repository="org/lib",
        ref="release/1.2",
        path="deps/lib",
        fetch_depth=0,
        filter="tree:0",
        sparse_checkout=("docs", "src/core"),
        sparse_checkout_cone_mode=False,
        submodules=True,
        clean=False,
        persist_credentials=True,
    )
    assert (step.id, step.name, step.continue_on_error) == ("lib", "Library", True)
    assert step.if_expr == "github.event_name == 'push'"


def test_defaults_keep_no_credential_and_clean() -> None:
    (step, _run) = steps("- uses: actions/checkout@v4\n- run: make\n")
    assert step.checkout == CheckoutSpec()
    assert step.checkout.persist_credentials is False and step.checkout.clean is True


def test_several_checkouts_keep_their_places_among_the_steps() -> None:
    got = steps(
        """\
        - run: echo first
        - uses: actions/checkout@v4
        - run: echo between
        - uses: actions/checkout@v4
          with: {repository: org/tools, path: tools}
        - run: echo last
        """
    )
    kinds = [("checkout" if s.checkout else s.run) for s in got]
    assert kinds == ["echo first", "checkout", "echo between", "checkout", "echo last"]
    assert got[3].checkout is not None and got[3].checkout.path == "tools"


def test_matrix_values_reach_checkout_inputs() -> None:
    text = textwrap.dedent(
        """\
        jobs:
          build:
            runs-on: linux
            strategy:
              matrix:
                lib: [one, two]
            steps:
              - uses: actions/checkout@v4
                with: {repository: 'org/${{ matrix.lib }}', path: '${{ matrix.lib }}'}
              - run: make
        """
    )
    jobs = parse_workflow(text, "wf.yml", CAPS).jobs
    assert [j.spec.steps[0].checkout for j in jobs] == [
        CheckoutSpec(repository="org/one", path="one"),
        CheckoutSpec(repository="org/two", path="two"),
    ]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("with: {filter: 'sparse:oid=abc'}", "with.filter: 'sparse:oid=abc' is not a filter"),
        ("with: {repository: '../x'}", "with.repository: "),
        ("with: {repository: 'file:///srv/x'}", "local repositories are refused"),
        ("with: {ref: '--upload-pack=x'}", "must not start with '-'"),
        ("with: {sparse-checkout: '--cone'}", "not starting with '-'"),
        ("with: {clean: maybe}", "with.clean: must be true or false"),
        ("with: {persist-credentials: 1}", "with.persist-credentials: must be true or false"),
        ("with: {token: abc}", "with.token: not supported by the built-in checkout"),
        ("shell: sh", "steps[0].shell: the built-in checkout takes only"),
    ],
)
def test_refused_inputs_name_the_key(body: str, words: str) -> None:
    found = errors(f"- uses: actions/checkout@v4\n  {body}\n- run: make\n")
    assert len(found) == 1, found
    assert found[0].startswith("wf.yml:"), found
    assert words in found[0]
