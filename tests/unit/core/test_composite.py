"""Composite actions' steps read with the workflow's step reader (errors at the action
file's line), the local actions a job names, and the pin policy of strict capabilities."""

from __future__ import annotations

import pytest

from ci_pool.core.actions import parse_uses, pin_problem
from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.composite import composite_steps, local_uses, read_action
from ci_pool.core.workflow.parser import parse_workflow, validate_workflow
from ci_pool.exceptions import ActionError

SHA = "0123456789abcdef0123456789abcdef01234567"

COMPOSITE = """\
name: c
inputs:
  who: {default: me}
outputs:
  out: {value: "${{ steps.a.outputs.x }}"}
runs:
  using: composite
  steps:
    - id: a
      shell: sh
      working-directory: sub
      env: {WHO: "${{ inputs.who }}"}
      run: echo "x=${{ inputs.who }} ${{ github.action_path }}" >> "$GITHUB_OUTPUT"
    - if: ${{ failure() }}
      uses: someorg/other@v2
      with: {level: 3}
    - uses: ./.ci/actions/inner
"""


def test_a_composite_action_reads_into_job_steps() -> None:
    definition, steps = read_action(COMPOSITE, "someorg/c@v1/action.yml")
    assert definition.runs.using == "composite"
    assert [s.id for s in steps] == ["a", None, None]
    assert steps[0].shell == "sh" and steps[0].working_directory == "sub"
    assert steps[0].env == {"WHO": "${{ inputs.who }}"}
    assert steps[1].uses == "someorg/other@v2" and steps[1].inputs == {"level": "3"}
    assert steps[1].if_expr == "failure()"
    assert local_uses(steps) == ["./.ci/actions/inner"]
    # Other kinds have no steps to read.
    node = "runs:\n  using: node20\n  main: index.js\n"
    assert read_action(node, "a/action.yml")[1] == ()


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ("    - run: echo ${{ steps.later.outputs.x }}\n      shell: sh\n",
         "a/action.yml:4:21: runs.steps[0].run: 'steps.later.outputs.x': no earlier step has id"),
        ("    - run: echo hi\n      shell: python\n",
         "a/action.yml:5:14: runs.steps[0].shell: 'python' is not supported"),
        ("    - uses: not an action\n",
         "a/action.yml:4:13: runs.steps[0].uses: 'not an action' is not an action reference"),
        ("    - name: nothing\n", "a/action.yml:4:7: runs.steps[0]: a step needs run: or uses:"),
    ],
)  # fmt: skip
def test_a_bad_composite_step_names_the_action_file_and_line(steps: str, expected: str) -> None:
    text = "runs:\n  using: composite\n  steps:\n" + steps
    with pytest.raises(ActionError) as err:
        composite_steps(text, "a/action.yml")
    assert str(err.value).startswith(expected), str(err.value)


def test_pins_are_full_shas_and_image_digests() -> None:
    assert pin_problem(parse_uses(f"someorg/x@{SHA}")) is None
    assert pin_problem(parse_uses("./.ci/actions/x")) is None
    assert pin_problem(parse_uses("docker://busybox@sha256:" + "a" * 64)) is None
    assert "someorg/x@v1 is not pinned" in (pin_problem(parse_uses("someorg/x@v1")) or "")
    short = pin_problem(parse_uses("someorg/x@0123456"))
    assert short is not None and "full commit SHA" in short
    assert "by digest" in (pin_problem(parse_uses("docker://busybox:1")) or "")


def test_strict_capabilities_refuse_unpinned_actions_at_the_line_of_uses() -> None:
    caps = {n: Capability(**d) for n, d in merge_capabilities(None).items()}
    assert caps["deploy"].require_pinned_actions and caps["iso"].require_pinned_actions
    assert not caps["linux"].require_pinned_actions
    text = (
        "on: push\njobs:\n  ship:\n    runs-on: deploy\n    steps:\n"
        "      - run: echo hi\n"
        f"      - uses: someorg/x@{SHA}\n"
        "      - uses: ./.ci/local\n"
        "      - uses: someorg/x/sub@main\n"
    )
    errors = validate_workflow(text, "ship.yml", caps)
    assert [str(e) for e in errors] == [
        "ship.yml:9:15: jobs.ship.steps[3].uses: someorg/x/sub@main is not pinned: this "
        "capability runs actions only at a full commit SHA (require_pinned_actions); write "
        "someorg/x@<40-hex commit> (capability 'deploy')"
    ]
    # The same job on linux is fine; an operator may turn the rule on there too.
    assert parse_workflow(text.replace("deploy", "linux"), "ci.yml", caps)
    caps["linux"] = caps["linux"].model_copy(update={"require_pinned_actions": True})
    assert len(validate_workflow(text.replace("deploy", "linux"), "ci.yml", caps)) == 1
