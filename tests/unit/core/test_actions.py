"""Action references as ``uses:`` writes them, and ``uses:`` steps in workflow files."""

from __future__ import annotations

import pytest

from ci_pool.core.actions import parse_uses, read_definition
from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.workflow.parser import parse_workflow, validate_workflow
from ci_pool.exceptions import ActionError

CAPS = {n: Capability(**d) for n, d in merge_capabilities(None).items()}


@pytest.mark.parametrize(
    ("text", "kind", "name", "path", "ref", "base"),
    [
        ("actions/cache@v4", "remote", "actions/cache", "", "v4", None),
        ("someorg/tools/setup/node@v1.2", "remote", "someorg/tools", "setup/node", "v1.2", None),
        (
            "https://git.example.internal/org/act@main",
            "remote",
            "org/act",
            "",
            "main",
            "https://git.example.internal",
        ),
        ("./.github/actions/build", "local", "/", ".github/actions/build", "", None),
        ("docker://alpine:3.19", "docker", "/", "", "", None),
    ],
)
def test_references_are_read(text, kind, name, path, ref, base) -> None:
    got = parse_uses(text)
    assert (got.kind, got.name, got.path, got.ref, got.base_url) == (kind, name, path, ref, base)
    assert str(got) == text.replace("./.github", "./.github")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("actions/cache", "not an action reference"),
        ("./../outside", "climbs out of the workspace"),
        ("org/repo@-upload-pack=evil", "must not start with '-'"),
        ("org/repo/../x@v1", "cannot hold . or .."),
        ("${{ matrix.action }}@v1", "cannot hold an expression"),
        ("https://bad host/org/r@v1", "not a host name"),
    ],
)
def test_bad_references_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_uses(text)


WF = """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - uses: actions/checkout@v4
      - id: up
        uses: actions/upload-artifact@v4
        with:
          name: dist-${{ github.sha }}
          path: dist/
          retention-days: 5
          overwrite: true
      - uses: ./local/action
      - uses: nope
"""


def test_uses_steps_keep_their_inputs_as_templates_and_bad_ones_point_at_the_line() -> None:
    assert [str(e) for e in validate_workflow(WF, "wf.yml", CAPS)] == [
        "wf.yml:15:15: jobs.build.steps[3].uses: 'nope' is not an action reference; give "
        "owner/repo@ref, owner/repo/path@ref, https://host/owner/repo@ref, "
        "./path/in/the/workspace or docker://image"
    ]
    ok = parse_workflow(WF.replace("      - uses: nope\n", ""), "wf.yml", CAPS)
    steps = ok.jobs[0].spec.steps
    assert steps[1].uses == "actions/upload-artifact@v4"
    assert steps[1].inputs == {
        "name": "dist-${{ github.sha }}",
        "path": "dist/",
        "retention-days": "5",
        "overwrite": "true",
    }
    assert steps[2].uses == "./local/action"


def test_an_action_file_is_read_with_its_inputs_outputs_and_runs() -> None:
    action = read_definition(
        "name: setup\ninputs:\n  version:\n    default: 20\n    required: true\n"
        "outputs:\n  path:\n    value: ${{ steps.s.outputs.p }}\n"
        "runs:\n  using: node20\n  main: dist/index.js\n  post: dist/post.js\n"
        "  post-if: always()\n",
        "setup/action.yml",
    )
    assert action.inputs["version"].default == "20" and action.inputs["version"].required
    assert action.outputs["path"].value == "${{ steps.s.outputs.p }}"
    assert (action.runs.using, action.runs.main, action.runs.post_if) == (
        "node20",
        "dist/index.js",
        "always()",
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "runs:\n  using: node12\n  main: x.js\n",
            "a/action.yml:2:10: runs.using: 'node12' is not supported; ci-pool runs actions "
            "using composite, node16, node20, node24, docker",
        ),
        (
            "runs:\n  using: node20\n",
            "a/action.yml:2:3: runs: runs.main is required for using: node20",
        ),
        ("runs:\n  using: node20\n  main: ../../etc/x.js\n", "must be a path inside the action"),
        ("name: x\n", "a/action.yml: runs: Field required"),
        ("runs: [", "a/action.yml:1:8: not valid YAML"),
    ],
)
def test_a_bad_action_file_says_where(text: str, problem: str) -> None:
    with pytest.raises(ActionError) as err:
        read_definition(text, "a/action.yml")
    assert problem in str(err.value)
