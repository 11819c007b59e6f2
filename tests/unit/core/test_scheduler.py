"""The pipeline scheduler's pure decisions: which blocked jobs are queued, skipped or
cancelled once their needs end, and the pipeline's result once every job is final."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ci_pool.core.scheduler import Decisions, JobView, PipelineState, decide, pipeline_result
from ci_pool.core.specs import JobState

B, Q, R = JobState.BLOCKED, JobState.QUEUED, JobState.RUNNING
OK, FAIL, CANCEL, SKIP = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED

CTX: dict[str, Any] = {"github": {"ref": "refs/heads/main", "event_name": "push"}, "env": {}}


def job(key: str, state: JobState, *needs: str, ref: str | None = None, **kw: Any) -> JobView:
    """A pipeline job whose id is its key (``build (a1)`` belongs to workflow job ``build``)."""
    return JobView(
        id=key, key=key, job_ref=ref or key.split(" ")[0], state=state, needs=needs, **kw
    )


def cells(ref: str, *states: JobState, **kw: Any) -> list[JobView]:
    """Matrix cells ``ref (a1)``, ``ref (a2)``, ... of one workflow job."""
    return [job(f"{ref} (a{i})", s, ref=ref, **kw) for i, s in enumerate(states, start=1)]


def queued(d: Decisions) -> list[str]:
    return d.queue


def skipped(d: Decisions) -> dict[str, str]:
    return dict(d.skip)


def cancelled(d: Decisions) -> dict[str, str]:
    return dict(d.cancel)


# -- needs -------------------------------------------------------------------------------


def test_a_job_without_needs_is_queued_and_nothing_else_happens() -> None:
    d = decide([job("lint", B)], CTX)
    assert queued(d) == ["lint"]
    assert not d.skip and not d.cancel


def test_a_job_waits_while_any_need_is_not_final() -> None:
    for state in (B, Q, R):
        d = decide([job("build", state), job("test", OK), job("deploy", B, "build", "test")], CTX)
        assert "deploy" not in queued(d) and "deploy" not in skipped(d)


def test_needs_met_queue_the_dependent() -> None:
    d = decide([job("build", OK), job("test", OK), job("deploy", B, "build", "test")], CTX)
    assert queued(d) == ["deploy"]
    assert not d.skip


def test_a_failed_need_skips_the_dependent_and_names_the_need() -> None:
    d = decide([job("build", FAIL), job("test", OK), job("deploy", B, "build", "test")], CTX)
    assert queued(d) == []
    assert skipped(d) == {"deploy": "needs build did not succeed"}


@pytest.mark.parametrize(
    "state", [JobState.TIMED_OUT, JobState.ERROR, JobState.REJECTED, JobState.CANCELLED]
)
def test_every_unsuccessful_end_of_a_need_skips_the_dependent(state: JobState) -> None:
    d = decide([job("build", state), job("deploy", B, "build")], CTX)
    assert list(skipped(d)) == ["deploy"]


def test_a_skipped_need_skips_the_dependent_in_turn() -> None:
    d = decide([job("build", SKIP), job("deploy", B, "build")], CTX)
    assert skipped(d) == {"deploy": "needs build did not succeed"}


def test_a_matrix_need_is_met_only_when_every_cell_succeeded() -> None:
    running = [*cells("build", OK, R), job("publish", B, "build (a1)", "build (a2)")]
    assert decide(running, CTX).queue == []
    one_failed = [*cells("build", OK, FAIL), job("publish", B, "build (a1)", "build (a2)")]
    assert list(skipped(decide(one_failed, CTX))) == ["publish"]
    all_ok = [*cells("build", OK, OK), job("publish", B, "build (a1)", "build (a2)")]
    assert queued(decide(all_ok, CTX)) == ["publish"]


def test_final_and_running_jobs_are_never_decided_again() -> None:
    jobs = [job("a", OK), job("b", FAIL), job("c", R), job("d", Q), job("e", SKIP)]
    assert not decide(jobs, CTX)


# -- if: ----------------------------------------------------------------------------------


def test_if_always_runs_after_a_failed_need() -> None:
    d = decide([job("build", FAIL), job("report", B, "build", if_expr="always()")], CTX)
    assert queued(d) == ["report"]


def test_if_always_and_cancelled_run_after_a_cancelled_need() -> None:
    jobs = [
        job("build", CANCEL),
        job("cleanup", B, "build", if_expr="always()"),
        job("on_cancel", B, "build", if_expr="cancelled()"),
        job("on_failure", B, "build", if_expr="failure()"),
    ]
    d = decide(jobs, CTX)
    assert queued(d) == ["cleanup", "on_cancel"]
    assert list(skipped(d)) == ["on_failure"]


def test_if_failure_runs_only_when_a_need_failed() -> None:
    on_failure = [job("build", FAIL), job("notify", B, "build", if_expr="failure()")]
    assert queued(decide(on_failure, CTX)) == ["notify"]
    on_success = [job("build", OK), job("notify", B, "build", if_expr="failure()")]
    assert skipped(decide(on_success, CTX)) == {"notify": "if: failure() was false"}


def test_if_without_a_status_function_also_needs_success() -> None:
    # GitHub reads `if: <expr>` as `success() && <expr>`.
    jobs = [
        job("build", FAIL),
        job("deploy", B, "build", if_expr="github.ref == 'refs/heads/main'"),
    ]
    assert skipped(decide(jobs, CTX)) == {"deploy": "if: github.ref == 'refs/heads/main' was false"}
    jobs = [job("build", OK), job("deploy", B, "build", if_expr="github.ref == 'refs/heads/main'")]
    assert queued(decide(jobs, CTX)) == ["deploy"]


def test_if_false_skips_a_job_whose_needs_succeeded() -> None:
    d = decide([job("build", OK), job("deploy", B, "build", if_expr="github.ref == 'x'")], CTX)
    assert skipped(d) == {"deploy": "if: github.ref == 'x' was false"}


def test_if_sees_the_needs_context_with_results_and_outputs() -> None:
    build = job("build", OK, outputs={"version": "1.2.3"})
    tagged = job("tag", B, "build", if_expr="needs.build.outputs.version == '1.2.3'")
    other = job("other", B, "build", if_expr="needs.build.result != 'success'")
    d = decide([build, tagged, other], CTX)
    assert queued(d) == ["tag"]
    assert list(skipped(d)) == ["other"]


@pytest.mark.parametrize(
    ("states", "result"),
    [
        ((OK, OK), "success"),
        ((OK, SKIP), "skipped"),
        ((SKIP, CANCEL), "cancelled"),
        ((CANCEL, FAIL), "failure"),
    ],
)
def test_needs_result_of_a_matrix_job_is_its_worst_cell(
    states: tuple[JobState, JobState], result: str
) -> None:
    report = job(
        "report", B, "build (a1)", "build (a2)",
        if_expr=f"always() && needs.build.result == '{result}'",
    )  # fmt: skip
    assert queued(decide([*cells("build", *states), report], CTX)) == ["report"]


def test_if_sees_the_jobs_matrix_and_env() -> None:
    jobs = [
        job("up (x)", B, ref="up", matrix={"os": "x"}, if_expr="matrix.os == 'x'"),
        job("up (y)", B, ref="up", matrix={"os": "y"}, if_expr="matrix.os == 'x'"),
        job("env", B, env={"STAGE": "prod"}, if_expr="env.STAGE == 'prod'"),
    ]
    d = decide(jobs, CTX)
    assert queued(d) == ["up (x)", "env"]
    assert list(skipped(d)) == ["up (y)"]


def test_an_if_that_cannot_be_evaluated_skips_with_the_reason() -> None:
    d = decide([job("deploy", B, if_expr="fromJSON('{')")], CTX)
    assert queued(d) == []
    reason = skipped(d)["deploy"]
    assert reason.startswith("if: fromJSON('{') could not be evaluated:")


# -- fail-fast and max-parallel ------------------------------------------------------------


def test_fail_fast_cancels_the_unfinished_cells_of_the_failed_matrix_only() -> None:
    jobs = [*cells("build", FAIL, R, Q, OK), *cells("lint", R, B)]
    d = decide(jobs, CTX)
    assert cancelled(d) == {
        "build (a2)": "fail-fast: build (a1) failed",
        "build (a3)": "fail-fast: build (a1) failed",
    }


def test_fail_fast_cancels_blocked_cells_instead_of_queueing_them() -> None:
    d = decide([*cells("build", FAIL, B)], CTX)
    assert cancelled(d) == {"build (a2)": "fail-fast: build (a1) failed"}
    assert queued(d) == []


def test_fail_fast_false_lets_the_other_cells_run() -> None:
    d = decide([*cells("build", FAIL, R, B, fail_fast=False)], CTX)
    assert not d.cancel
    assert queued(d) == ["build (a3)"]


def test_a_single_job_that_fails_cancels_nothing() -> None:
    d = decide([job("build", FAIL), job("lint", R)], CTX)
    assert not d.cancel


def test_max_parallel_queues_only_up_to_the_limit() -> None:
    d = decide(cells("build", B, B, B, B, B, max_parallel=2), CTX)
    assert queued(d) == ["build (a1)", "build (a2)"]
    assert not d.skip


def test_max_parallel_counts_queued_and_running_cells() -> None:
    d = decide(cells("build", R, Q, B, B, max_parallel=3), CTX)
    assert queued(d) == ["build (a3)"]
    d = decide(cells("build", OK, OK, R, B, B, max_parallel=2), CTX)
    assert queued(d) == ["build (a4)"]


def test_max_parallel_is_per_workflow_job() -> None:
    d = decide([*cells("a", R, B, max_parallel=1), *cells("b", B, B, max_parallel=1)], CTX)
    assert queued(d) == ["b (a1)"]


# -- continue-on-error ---------------------------------------------------------------------


def test_continue_on_error_lets_dependents_run_after_a_failure() -> None:
    d = decide([job("flaky", FAIL, continue_on_error=True), job("deploy", B, "flaky")], CTX)
    assert queued(d) == ["deploy"]


def test_continue_on_error_cell_does_not_trigger_fail_fast() -> None:
    d = decide(cells("build", FAIL, R, continue_on_error=True), CTX)
    assert not d.cancel


def test_continue_on_error_does_not_hide_a_cancelled_need() -> None:
    d = decide([job("flaky", CANCEL, continue_on_error=True), job("deploy", B, "flaky")], CTX)
    assert list(skipped(d)) == ["deploy"]


# -- the pipeline's result -----------------------------------------------------------------


def test_pipeline_result_is_none_while_a_job_is_not_final() -> None:
    for state in (B, Q, R):
        assert pipeline_result([job("a", OK), job("b", state)]) is None


def test_pipeline_succeeds_when_every_job_succeeded_or_was_skipped() -> None:
    assert pipeline_result([job("a", OK), job("b", OK)]) is PipelineState.SUCCEEDED
    assert pipeline_result([job("a", OK), job("b", SKIP)]) is PipelineState.SUCCEEDED


@pytest.mark.parametrize("state", [FAIL, JobState.TIMED_OUT, JobState.ERROR, JobState.REJECTED])
def test_pipeline_fails_when_any_job_ended_unsuccessfully(state: JobState) -> None:
    assert pipeline_result([job("a", OK), job("b", state)]) is PipelineState.FAILED


def test_failure_wins_over_cancelled() -> None:
    assert pipeline_result([job("a", CANCEL), job("b", FAIL)]) is PipelineState.FAILED
    assert pipeline_result([job("a", CANCEL), job("b", OK)]) is PipelineState.CANCELLED


def test_a_failure_allowed_by_continue_on_error_does_not_fail_the_pipeline() -> None:
    jobs = [job("a", FAIL, continue_on_error=True), job("b", OK)]
    assert pipeline_result(jobs) is PipelineState.SUCCEEDED


def test_a_whole_run_decided_step_by_step() -> None:
    """build (matrix, fail-fast) -> test -> deploy, with notify on failure: one cell fails."""
    jobs = {
        j.id: j
        for j in [
            *cells("build", Q, Q),
            job("test", B, "build (a1)", "build (a2)"),
            job("deploy", B, "test"),
            job("notify", B, "build (a1)", "build (a2)", "test", if_expr="failure()"),
        ]
    }

    def end(jid: str, state: JobState) -> None:
        jobs[jid] = replace(jobs[jid], state=state)

    end("build (a1)", FAIL)
    d = decide(list(jobs.values()), CTX)
    assert cancelled(d) == {"build (a2)": "fail-fast: build (a1) failed"}
    end("build (a2)", CANCEL)
    d = decide(list(jobs.values()), CTX)
    assert skipped(d) == {"test": "needs build (a1), build (a2) did not succeed"}
    end("test", SKIP)
    d = decide(list(jobs.values()), CTX)
    assert skipped(d) == {"deploy": "needs test did not succeed"}
    assert queued(d) == ["notify"]
    end("deploy", SKIP)
    end("notify", OK)
    assert pipeline_result(list(jobs.values())) is PipelineState.FAILED


# -- status functions see every ancestor, as GitHub's do --------------------------------------


def test_if_failure_sees_a_failed_ancestor_behind_a_skipped_need() -> None:
    jobs = [
        job("build", FAIL),
        job("test", SKIP, "build"),
        job("notify", B, "test", if_expr="failure()"),
    ]
    assert queued(decide(jobs, CTX)) == ["notify"]


def test_a_failure_up_the_chain_stops_a_job_behind_an_always_job() -> None:
    # build failed, cleanup ran anyway (always()) and succeeded: deploy must not run, and
    # says which job up the chain failed.
    jobs = [
        job("build", FAIL),
        job("cleanup", OK, "build", if_expr="always()"),
        job("deploy", B, "cleanup"),
        job("ship", B, "cleanup", if_expr="success()"),
        job("alert", B, "cleanup", if_expr="failure()"),
        job("gated", B, "cleanup", if_expr="github.ref == 'refs/heads/main'"),
    ]
    d = decide(jobs, CTX)
    assert queued(d) == ["alert"]
    assert skipped(d) == {
        "deploy": "build further up the needs did not succeed",
        "ship": "if: success() was false",
        "gated": "if: github.ref == 'refs/heads/main' was false",
    }


def test_cancelled_sees_a_cancelled_ancestor() -> None:
    jobs = [
        job("build", CANCEL),
        job("cleanup", OK, "build", if_expr="always()"),
        job("on_cancel", B, "cleanup", if_expr="cancelled()"),
        job("deploy", B, "cleanup"),
    ]
    d = decide(jobs, CTX)
    assert queued(d) == ["on_cancel"]
    assert skipped(d) == {"deploy": "build further up the needs did not succeed"}


def test_a_skip_further_up_does_not_skip_a_job_whose_needs_succeeded() -> None:
    # Deliberately not GitHub's: there a job behind a succeeded `always()` job is still
    # skipped when anything further up was skipped (actions/runner#2205).
    jobs = [
        job("docs", SKIP),
        job("build", OK, "docs", if_expr="always()"),
        job("deploy", B, "build"),
        job("alert", B, "build", if_expr="failure()"),
    ]
    d = decide(jobs, CTX)
    assert queued(d) == ["deploy"]
    assert skipped(d) == {"alert": "if: failure() was false"}


def test_continue_on_error_up_the_chain_counts_as_success() -> None:
    jobs = [
        job("lint", FAIL, continue_on_error=True),
        job("build", OK, "lint"),
        job("deploy", B, "build"),
    ]
    assert queued(decide(jobs, CTX)) == ["deploy"]


def test_ancestors_of_a_diamond_and_a_matrix_are_each_counted_once() -> None:
    from ci_pool.core.scheduler import ancestors

    jobs = [
        *cells("build", OK, FAIL),
        job("a", OK, "build (a1)", "build (a2)"),
        job("b", OK, "build (a1)"),
        job("c", B, "a", "b"),
    ]
    by_key = {j.key: j for j in jobs}
    assert sorted(j.key for j in ancestors(by_key["c"], by_key)) == [
        "a", "b", "build (a1)", "build (a2)",
    ]  # fmt: skip
    assert skipped(decide(jobs, CTX)) == {"c": "build (a2) further up the needs did not succeed"}
