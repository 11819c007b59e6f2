"""Concurrency groups: the claim decision (one running, one waiting, the newest waiting
wins, cancel-in-progress), the group evaluated at submit, and ``concurrency:`` parsed."""

from __future__ import annotations

import textwrap

import pytest

from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.concurrency import (
    Concurrency,
    ConcurrencyGroup,
    Slot,
    SubmitFacts,
    Verdict,
    check_no_deadlock,
    claim,
    group_key,
    resolve,
)
from ci_pool.core.workflow.parser import parse_workflow, validate_workflow
from ci_pool.exceptions import InputError

CAPS = {n: Capability(**d) for n, d in merge_capabilities(None).items()}
FACTS = SubmitFacts(
    repo="git://127.0.0.1:9418/org/app.git",
    ref="main",
    sha="a" * 40,
    event="push",
    workflow="deploy",
    run_id="p1",
)

# -- the decision ------------------------------------------------------------------------


def test_a_free_group_is_taken() -> None:
    got = claim(Slot(), "pipeline:b", False)
    assert (got.verdict, got.holder, got.pending, got.supersede) == (
        Verdict.RUN,
        "pipeline:b",
        None,
        None,
    )
    assert got.changes(Slot())


def test_the_holder_keeps_running_without_a_write() -> None:
    slot = Slot("pipeline:a", True, "pipeline:b", True)
    got = claim(slot, "pipeline:a", False)
    assert got.verdict is Verdict.RUN
    assert not got.changes(slot)


def test_a_second_member_waits_for_the_running_one() -> None:
    slot = Slot("pipeline:a", True)
    got = claim(slot, "pipeline:b", False)
    assert (got.verdict, got.holder, got.pending) == (Verdict.WAIT, "pipeline:a", "pipeline:b")
    assert got.supersede is None and got.cancel is None


def test_the_waiting_member_asking_again_changes_nothing() -> None:
    slot = Slot("pipeline:a", True, "pipeline:b", True)
    got = claim(slot, "pipeline:b", False)
    assert got.verdict is Verdict.WAIT
    assert not got.changes(slot)
    assert got.supersede is None


def test_a_third_member_supersedes_the_waiting_one() -> None:
    slot = Slot("pipeline:a", True, "pipeline:b", True)
    got = claim(slot, "pipeline:c", False)
    assert (got.verdict, got.pending, got.supersede) == (Verdict.WAIT, "pipeline:c", "pipeline:b")
    assert got.cancel is None


def test_a_waiting_member_that_ended_is_not_superseded_again() -> None:
    got = claim(Slot("pipeline:a", True, "pipeline:b", False), "pipeline:c", False)
    assert got.supersede is None and got.pending == "pipeline:c"


def test_the_waiting_member_runs_once_the_holder_ended() -> None:
    slot = Slot("pipeline:a", False, "pipeline:b", True)
    got = claim(slot, "pipeline:b", False)
    assert (got.verdict, got.holder, got.pending, got.supersede) == (
        Verdict.RUN,
        "pipeline:b",
        None,
        None,
    )


def test_a_newcomer_into_a_freed_group_supersedes_the_one_still_waiting() -> None:
    got = claim(Slot("pipeline:a", False, "pipeline:b", True), "pipeline:c", False)
    assert (got.verdict, got.holder, got.supersede) == (Verdict.RUN, "pipeline:c", "pipeline:b")


def test_cancel_in_progress_cancels_the_holder_and_waits_for_it_to_end() -> None:
    slot = Slot("job:a", True, "job:b", True)
    got = claim(slot, "job:c", True)
    assert (got.verdict, got.holder, got.pending) == (Verdict.WAIT, "job:a", "job:c")
    assert (got.cancel, got.supersede) == ("job:a", "job:b")


# -- evaluation at submit ----------------------------------------------------------------


def test_the_group_is_rendered_from_the_github_facts_known_at_submit() -> None:
    conc = Concurrency("${{ github.workflow }}-${{ github.ref }}-${{ github.repository }}")
    assert resolve(conc, FACTS, "concurrency") == ConcurrencyGroup(
        name="deploy-refs/heads/main-org/app", cancel_in_progress=False
    )


def test_cancel_in_progress_may_be_an_expression() -> None:
    conc = Concurrency("ci-${{ github.ref_name }}", "${{ github.ref != 'refs/heads/main' }}")
    assert resolve(conc, FACTS, "concurrency") == ConcurrencyGroup(name="ci-main")
    other = SubmitFacts(**{**FACTS.__dict__, "ref": "refs/heads/feature"})
    assert resolve(conc, other, "concurrency") == ConcurrencyGroup(
        name="ci-feature", cancel_in_progress=True
    )


def test_a_pull_request_fallback_uses_the_ref_outside_pull_requests() -> None:
    conc = Concurrency(
        "${{ github.workflow }}-${{ github.event.pull_request.number || github.ref }}"
    )
    assert resolve(conc, FACTS, "concurrency").name == "deploy-refs/heads/main"  # type: ignore[union-attr]


def test_an_empty_group_is_an_error_naming_the_field() -> None:
    with pytest.raises(InputError) as exc:
        resolve(Concurrency("${{ github.head_ref }}"), FACTS, "jobs.deploy.concurrency")
    assert exc.value.field == "jobs.deploy.concurrency"
    assert "is empty for this run" in str(exc.value)


def test_cancel_in_progress_that_is_not_a_boolean_is_an_error() -> None:
    with pytest.raises(InputError, match="must be true or false"):
        resolve(Concurrency("g", "${{ github.ref }}"), FACTS, "concurrency")


def test_a_job_in_its_own_workflows_group_is_refused() -> None:
    group = ConcurrencyGroup(name="deploy")
    with pytest.raises(InputError, match="wait for its own pipeline forever"):
        check_no_deadlock(group, ConcurrencyGroup(name="deploy"), "jobs.x.concurrency")
    check_no_deadlock(group, ConcurrencyGroup(name="other"), "jobs.x.concurrency")


def test_groups_are_per_repository() -> None:
    assert group_key("git://h/org/app.git", "g") == group_key("git://h/org/app/", "g")
    assert group_key("git://h/org/app.git", "g") != group_key("git://h/org/lib.git", "g")
    assert group_key("git://h/org/app.git", "g") != group_key("git://h/org/app.git", "h")


# -- parsing -----------------------------------------------------------------------------


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_workflow(textwrap.dedent(text), "wf.yml", CAPS)


def problems(text: str) -> list[str]:
    return [str(e) for e in validate_workflow(textwrap.dedent(text), "wf.yml", CAPS)]


def test_workflow_and_job_concurrency_are_read() -> None:
    pipe = parse(
        """\
        name: deploy
        concurrency: ${{ github.workflow }}-${{ github.ref }}
        jobs:
          ship:
            runs-on: linux
            concurrency:
              group: ship-${{ matrix.env }}
              cancel-in-progress: true
            strategy:
              matrix:
                env: [staging, prod]
            steps:
              - run: echo hi
        """
    )
    assert pipe.concurrency == Concurrency("${{ github.workflow }}-${{ github.ref }}", "false")
    assert [j.concurrency for j in pipe.jobs] == [
        Concurrency("ship-staging", "true"),
        Concurrency("ship-prod", "true"),
    ]


def test_contexts_not_known_at_submit_are_errors_at_their_column() -> None:
    found = problems(
        """\
        jobs:
          a:
            runs-on: linux
            steps: [{run: echo}]
          b:
            runs-on: linux
            needs: a
            concurrency: b-${{ needs.a.result }}
            steps: [{run: echo}]
        """
    )
    assert len(found) == 1, found
    assert found[0].startswith("wf.yml:8:")
    assert "decided when the pipeline is submitted" in found[0]
    assert "needs.a.result" in found[0]


def test_unknown_keys_and_a_missing_group_are_errors() -> None:
    found = problems(
        """\
        concurrency:
          cancel-in-progress: yes-please
          queue: max
        jobs:
          a:
            runs-on: linux
            steps: [{run: echo}]
        """
    )
    text = "\n".join(found)
    assert "concurrency.queue: unknown key" in text
    assert "concurrency: needs group:" in text


def test_matrix_in_a_workflow_level_group_is_an_error() -> None:
    found = problems(
        """\
        concurrency: x-${{ matrix.os }}
        jobs:
          a:
            runs-on: linux
            steps: [{run: echo}]
        """
    )
    assert len(found) == 1 and "it may use github.*, inputs.*, vars.*" in found[0], found
    assert "matrix.*" not in found[0]
