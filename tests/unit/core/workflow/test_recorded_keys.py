"""Workflow keys that change nothing in how the pool runs a job are read and recorded:
``permissions`` (workflow and job), ``run-name`` and ``environment``."""

from __future__ import annotations

import textwrap

import pytest

from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.specs import EnvironmentSpec
from ci_pool.core.workflow.parser import parse_workflow, validate_workflow

CAPS = {n: Capability(**d) for n, d in merge_capabilities(None).items()}

FILE = """\
name: release
run-name: Release ${{ github.ref }} (${{ github.event_name }})
permissions: read-all
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: make
  publish:
    runs-on: linux
    permissions:
      contents: write
      id-token: write
      pull-requests: none
    environment:
      name: production
      url: https://example.org/${{ github.sha }}
    steps:
      - run: make publish
  docs:
    runs-on: linux
    permissions: {}
    environment: docs-${{ matrix.site }}
    strategy:
      matrix:
        site: [main]
    steps:
      - run: make docs
"""


def test_permissions_run_name_and_environment_are_recorded() -> None:
    p = parse_workflow(FILE, "wf.yml", CAPS)
    assert p.run_name == "Release ${{ github.ref }} (${{ github.event_name }})"
    assert p.permissions == {"*": "read"}
    build, publish, docs = p.jobs
    # A job without its own permissions has the workflow's.
    assert build.spec.permissions == {"*": "read"} and build.spec.environment is None
    assert publish.spec.permissions == {
        "contents": "write",
        "id-token": "write",
        "pull-requests": "none",
    }
    assert publish.spec.environment == EnvironmentSpec(
        name="production", url="https://example.org/${{ github.sha }}"
    )
    assert docs.spec.permissions == {}
    assert docs.spec.environment == EnvironmentSpec(name="docs-main")


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("permissions: admin\n", "wf.yml:1:14", "permissions: must be read-all, write-all"),
        (
            "permissions: {contents: owner}\n",
            "wf.yml:1:25",
            "contents: must be read, write or none",
        ),
        ("permissions: {secrets: read}\n", "wf.yml:1:15", "secrets: not a permission scope"),
        ("run-name: ''\n", "wf.yml:1:11", "run-name: must be a non-empty string"),
        ("run-name: ${{ env.X }}\n", "wf.yml:1:15", "run-name: 'env.X'"),
    ],
)
def test_bad_values_are_errors_at_their_place(text: str, where: str, words: str) -> None:
    found = validate_workflow(
        text + "jobs:\n  b:\n    runs-on: linux\n    steps: [{run: make}]\n", "wf.yml", CAPS
    )
    assert len(found) == 1, found
    assert str(found[0]).startswith(where + ":"), found[0]
    assert words in str(found[0])


def test_environment_needs_a_name() -> None:
    text = textwrap.dedent(
        """\
        jobs:
          b:
            runs-on: linux
            environment: {url: 'https://x'}
            steps: [{run: make}]
        """
    )
    (err,) = validate_workflow(text, "wf.yml", CAPS)
    assert "jobs.b.environment: needs name:" in str(err)
