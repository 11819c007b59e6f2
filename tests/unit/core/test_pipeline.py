"""Pipelines: cycle finding and the topological order of hand-made job graphs."""

from __future__ import annotations

import pytest

from ci_pool.core.pipeline import (
    Pipeline,
    PipelineJob,
    WorkflowErrors,
    find_cycles,
    topological_order,
)
from ci_pool.core.specs import JobSpec, StepSpec
from ci_pool.exceptions import InputError


def job(key: str, *needs: str) -> PipelineJob:
    spec = JobSpec(
        repo="", name=key, capability="linux", labels=("linux",), steps=(StepSpec(run="true"),)
    )
    return PipelineJob(
        key=key, job_id=key.split(" ")[0], spec=spec, matrix={}, needs=needs, need_ids=needs,
        if_expr=None, continue_on_error=False, outputs={},
    )  # fmt: skip


def pipeline(*jobs: PipelineJob) -> Pipeline:
    return Pipeline("p", "p.yml", None, jobs)


def test_find_cycles() -> None:
    assert find_cycles({"a": [], "b": ["a"]}) == []
    assert find_cycles({"a": ["b"], "b": ["a"]}) == [["a", "b"]]
    assert find_cycles({"a": ["a"]}) == [["a"]]
    assert find_cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["d"]}) == [["a", "b", "c"], ["d"]]
    assert find_cycles({"a": ["missing"]}) == []  # unknown needs are someone else's error


def test_topological_order_in_waves_by_file_order() -> None:
    p = pipeline(job("deploy", "iso"), job("iso", "android", "web"), job("web", "linux"),
                 job("android", "linux"), job("linux"))  # fmt: skip
    assert [j.key for j in topological_order(p)] == ["linux", "web", "android", "iso", "deploy"]


def test_topological_order_refuses_cycles_and_unknown_needs() -> None:
    with pytest.raises(WorkflowErrors, match="jobs a, b need each other in a cycle"):
        topological_order(pipeline(job("a", "b"), job("b", "a"), job("c")))
    with pytest.raises(WorkflowErrors, match="job 'a' needs 'x', which is not in the pipeline"):
        topological_order(pipeline(job("a", "x")))


def test_pipeline_lookups() -> None:
    p = pipeline(job("build (1)"), job("build (2)"), job("test", "build (1)", "build (2)"))
    assert p.job("test").needs == ("build (1)", "build (2)")
    assert [j.key for j in p.cells("build")] == ["build (1)", "build (2)"]
    assert p.job("build (1)").matrix_group == "build"
    with pytest.raises(KeyError):
        p.job("nope")


def test_workflow_errors_is_an_input_error() -> None:
    exc = WorkflowErrors([])
    assert isinstance(exc, InputError) and exc.errors == [] and exc.exit_code == 2
