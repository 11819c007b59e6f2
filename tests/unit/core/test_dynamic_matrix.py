"""A matrix computed by an earlier job: parsed into one template job, then, once its needs
have ended, expanded into cells, skipped (no cells) or failed (not a matrix) by ``decide``."""

from __future__ import annotations

from typing import Any

import pytest

from ci_pool.core.capabilities import Capability
from ci_pool.core.scheduler import JobView, decide
from ci_pool.core.specs import CheckoutSpec, JobState, StepSpec
from ci_pool.core.workflow.dynamic_matrix import MatrixTemplate, cells_of
from ci_pool.core.workflow.parser import parse_workflow, validate_workflow

CAPS = {"linux": Capability(name="linux", queue="linux")}
CTX: dict[str, Any] = {"github": {"ref": "refs/heads/main"}, "env": {}, "vars": {}, "inputs": {}}

WHOLE = "${{ fromJSON(needs.plan.outputs.matrix) }}"
AXIS = {"target": "${{ fromJSON(needs.plan.outputs.list) }}", "os": ["linux"]}


def plan(outputs: dict[str, Any], state: JobState = JobState.SUCCEEDED) -> JobView:
    return JobView(id="p", key="plan", job_ref="plan", state=state, outputs=outputs)


def build(template: Any, **kw: Any) -> JobView:
    return JobView(
        id="b",
        key="build",
        job_ref="build",
        state=JobState.BLOCKED,
        needs=("plan",),
        matrix_template=template,
        **kw,
    )


def test_whole_matrix_from_an_output_expands_into_its_cells() -> None:
    out = '{"target": ["a", "b", "c"], "include": [{"target": "c", "extra": 1}]}'
    d = decide([plan({"matrix": out}), build(WHOLE)], CTX)
    assert not d.queue and not d.skip and not d.fail
    assert d.expand == [("b", [{"target": "a"}, {"target": "b"}, {"target": "c", "extra": 1}])]


def test_one_axis_from_an_output_is_crossed_with_the_written_axes() -> None:
    d = decide([plan({"list": '["x", "y"]'}), build(AXIS)], CTX)
    assert d.expand == [("b", [{"target": "x", "os": "linux"}, {"target": "y", "os": "linux"}])]


def test_nothing_happens_while_the_needs_run() -> None:
    d = decide([plan({}, JobState.RUNNING), build(WHOLE)], CTX)
    assert not d


def test_an_empty_list_skips_the_job() -> None:
    d = decide([plan({"list": "[]"}), build(AXIS)], CTX)
    assert dict(d.skip) == {"b": "the matrix computed at run time has no combinations"}
    assert not d.expand


@pytest.mark.parametrize(
    ("outputs", "template", "says"),
    [
        (
            {"matrix": "not json"},
            WHOLE,
            "could not be evaluated: fromJSON(): 'not json' is not JSON",
        ),
        ({"matrix": '["a"]'}, WHOLE, "gave ['a'], not a mapping"),
        ({"list": '{"a": 1}'}, AXIS, "strategy.matrix.target: ${{ fromJSON(needs.plan"),
        ({"matrix": '{"include": [1]}'}, WHOLE, "strategy.matrix.include: must be a list"),
        ({"matrix": '{"a": [1], "exclude": [{"b": 1}]}'}, WHOLE, "'b' is not a key"),
        ({"list": "[" + ",".join(map(str, range(300))) + "]"}, AXIS, "300 combinations"),
    ],
)
def test_an_output_that_is_not_a_matrix_fails_the_job_saying_why(
    outputs: dict[str, str], template: Any, says: str
) -> None:
    d = decide([plan(outputs), build(template)], CTX)
    assert not d.expand
    ((job_id, reason),) = d.fail
    assert job_id == "b" and "the matrix is not valid" in reason and says in reason


def test_a_false_if_skips_the_template_without_evaluating_the_matrix() -> None:
    job = build(WHOLE, if_expr="needs.plan.outputs.matrix != '[]'")
    d = decide([plan({"matrix": "[]"}), job], CTX)
    assert "b" in dict(d.skip) and not d.fail


def test_dependents_aggregate_every_cell_once_expanded() -> None:
    cells = [
        JobView(id=f"c{i}", key=f"build ({i})", job_ref="build", state=s)
        for i, s in enumerate([JobState.SUCCEEDED, JobState.SUCCEEDED, JobState.RUNNING])
    ]
    final = JobView(
        id="f",
        key="final",
        job_ref="final",
        state=JobState.BLOCKED,
        needs=tuple(c.key for c in cells),
        if_expr="always() && needs.build.result == 'success'",
    )
    assert not decide([*cells, final], CTX).queue
    done = [JobView(id=c.id, key=c.key, job_ref="build", state=JobState.SUCCEEDED) for c in cells]
    assert decide([*done, final], CTX).queue == ["f"]


def test_cells_substitute_the_matrix_and_take_static_style_keys() -> None:
    template = MatrixTemplate(
        key="build",
        name="build",
        env={"T": "${{ matrix.target }}"},
        steps=(StepSpec(run="echo ${{ matrix.target }} ${{ strategy.job-index }} ${{ env.X }}"),),
        if_expr="matrix.target != 'b' && github.ref != ''",
        outputs={},
        checkout=CheckoutSpec(),
        environment=None,
    )
    made = cells_of(template, [{"target": "a"}, {"target": "b"}])
    assert [c.key for c in made] == ["build (a)", "build (b)"]
    assert [c.name for c in made] == ["build (a)", "build (b)"]
    assert made[1].env == {"T": "b"}
    assert made[1].steps[0].run == "echo b 1 ${{ env.X }}"
    assert made[0].if_expr is not None and "github.ref" in made[0].if_expr
    assert made[1].if_expr == "false"


def test_the_corpus_file_parses_into_one_template_job() -> None:
    with open("tests/corpus/github/dynamic-matrix-fromjson.yml") as f:
        pipeline = parse_workflow(f.read(), "dyn.yml", CAPS)
    build_job = pipeline.job("build")
    assert build_job.dynamic_matrix == {"target": "${{ fromJSON(needs.plan.outputs.targets) }}"}
    assert build_job.spec.steps[0].run == 'echo "building for ${{ matrix.target }}"'


BAD = """\
on: push
jobs:
  plan:
    runs-on: linux
    outputs: {m: x}
    steps: [{run: "true"}]
  other:
    runs-on: linux
    steps: [{run: "true"}]
  build:
    needs: plan
    runs-on: ${{ matrix.os }}
    strategy:
      matrix: ${{ fromJSON(needs.other.outputs.m) }}
    steps: [{run: "true"}]
  b2:
    needs: plan
    runs-on: linux
    strategy:
      matrix:
        os: ${{ fromJSON(steps.a.outputs.m) }}
        v: [1, "${{ needs.plan.outputs.m }}"]
    steps: [{run: "true"}]
"""


def test_a_matrix_expression_may_read_only_its_own_needs_github_vars_inputs() -> None:
    errors = [str(e) for e in validate_workflow(BAD, "bad.yml", CAPS)]
    assert errors == [
        "bad.yml:12:14: jobs.build.runs-on: must be known when the workflow is parsed; this "
        "job's matrix is computed at run time, so it cannot use matrix.* here",
        "bad.yml:14:28: jobs.build.strategy.matrix: 'needs.other.outputs.m': 'other' is not in "
        "this job's needs (it needs: plan)",
        "bad.yml:21:26: jobs.b2.strategy.matrix.os: 'steps.a.outputs.m': steps is not "
        "available here; use github, inputs, needs, vars",
        "bad.yml:22:12: jobs.b2.strategy.matrix.v: an expression must be the whole value of "
        "a matrix key",
    ]


def test_cells_may_not_take_the_pipeline_past_its_job_limit() -> None:
    jobs = [plan({"list": '["a", "b", "c"]'}), build(AXIS)]
    assert decide(jobs, CTX, max_jobs=4).expand
    ((_, reason),) = decide(jobs, CTX, max_jobs=3).fail
    assert "its 3 cells would take the pipeline past max_jobs_per_pipeline" in reason
