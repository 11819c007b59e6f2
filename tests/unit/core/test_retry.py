"""The retry and lease policy as a pure function, and the operator's retry edges."""

from __future__ import annotations

import pytest

from ci_pool.core.retry import Next, after_attempt, lost_reason
from ci_pool.core.specs import RETRY_TRANSITIONS, TRANSITIONS, JobState, sources_of

S = JobState


@pytest.mark.parametrize("state", [S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED])
def test_only_an_infra_error_is_ever_retried(state: JobState) -> None:
    assert after_attempt(state, 1, 3, False).next is Next.GIVE_UP
    assert after_attempt(state, 1, 3, True).next is Next.GIVE_UP


def test_error_is_requeued_with_exponential_backoff_while_attempts_remain() -> None:
    first = after_attempt(S.ERROR, 1, 3, False, backoff=2, backoff_max=60)
    second = after_attempt(S.ERROR, 2, 3, False, backoff=2, backoff_max=60)
    assert (first.next, first.delay, first.reason) == (Next.REQUEUE, 2, "retry 2/3")
    assert (second.next, second.delay, second.reason) == (Next.REQUEUE, 4, "retry 3/3")
    assert after_attempt(S.ERROR, 3, 3, False).next is Next.GIVE_UP


def test_backoff_is_capped() -> None:
    assert after_attempt(S.ERROR, 9, 20, False, backoff=2, backoff_max=60).delay == 60


def test_a_cancel_request_wins_over_a_retry() -> None:
    decision = after_attempt(S.ERROR, 1, 3, True)
    assert decision.next is Next.CANCEL and "cancelled" in decision.reason


def test_lost_reason_names_the_runner() -> None:
    assert lost_reason("linux@a").startswith("runner_lost: no heartbeat from linux@a")


def test_operator_retry_edges_are_their_own_table() -> None:
    # A retry never turns a rejection around, and never touches a job that ran fine.
    assert S.REJECTED not in RETRY_TRANSITIONS and S.SUCCEEDED not in RETRY_TRANSITIONS
    assert sources_of(S.BLOCKED, operator=True) == {
        S.FAILED,
        S.TIMED_OUT,
        S.CANCELLED,
        S.ERROR,
        S.SKIPPED,
    }
    # Final states stay final for everything but the operator.
    for state in (S.FAILED, S.TIMED_OUT, S.CANCELLED, S.SKIPPED):
        assert state.is_final and not TRANSITIONS[state]
