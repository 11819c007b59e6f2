"""The one retry and lease policy: what follows an attempt that ended.

Pure: the store applies it when it closes an attempt (a worker's finish, a lost lease found
at claim time or by the reaper), and the runner uses the delay it gives. An infra ``error``
is retried with exponential backoff while attempts remain; a failing build never is; a job
whose cancel was requested ends ``cancelled`` instead of running again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ci_pool import defaults
from ci_pool.core.specs import JobState


class Next(str, Enum):
    """What happens to a job once an attempt of it is closed."""

    REQUEUE = "requeue"  # back to queued, sent again after ``delay``
    GIVE_UP = "give_up"  # the closing state is final
    CANCEL = "cancel"  # error -> cancelled: the user asked for it


@dataclass(frozen=True, slots=True)
class AfterAttempt:
    next: Next
    #: Seconds to wait before the message is sent again (REQUEUE only).
    delay: float = 0.0
    #: The audit reason of the follow-up transition (REQUEUE and CANCEL).
    reason: str = ""


def after_attempt(
    state: JobState,
    attempt: int,
    max_attempts: int,
    cancel_requested: bool,
    *,
    backoff: float = defaults.RETRY_BACKOFF,
    backoff_max: float = defaults.RETRY_BACKOFF_MAX,
) -> AfterAttempt:
    """The decision for an attempt that ended in ``state``."""
    if state is not JobState.ERROR:
        return AfterAttempt(Next.GIVE_UP)
    if cancel_requested:
        return AfterAttempt(Next.CANCEL, reason="cancelled (its attempt ended in error)")
    if attempt >= max_attempts:
        return AfterAttempt(Next.GIVE_UP)
    delay = min(backoff * 2 ** max(attempt - 1, 0), backoff_max)
    return AfterAttempt(Next.REQUEUE, delay=delay, reason=f"retry {attempt + 1}/{max_attempts}")


def lost_reason(runner_id: str | None) -> str:
    """Why an attempt whose lease expired was closed: its runner stopped heartbeating."""
    return f"runner_lost: no heartbeat from {runner_id or 'its runner'} since the lease ended"
