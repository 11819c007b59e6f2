"""What a job's state looks like as a commit status (pure)."""

from __future__ import annotations

import pytest

from ci_pool.core.forges import (
    DESCRIPTION_MAX,
    context_name,
    describe,
    job_link,
    status_state,
)
from ci_pool.core.specs import JobState as S


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (S.BLOCKED, None),
        (S.QUEUED, "pending"),
        (S.RUNNING, "pending"),
        (S.SUCCEEDED, "success"),
        (S.FAILED, "failure"),
        (S.TIMED_OUT, "failure"),
        (S.ERROR, "error"),
        (S.CANCELLED, "error"),
        (S.REJECTED, "error"),
        (S.SKIPPED, "success"),
    ],
)
def test_every_job_state_has_its_forge_state(state: S, expected: str | None) -> None:
    assert status_state(state) == expected


def test_contexts_name_the_workflow_and_the_job() -> None:
    assert context_name("android (arm64)", "release") == "ci-pool/release/android (arm64)"
    assert context_name("build") == "ci-pool/build"
    assert len(context_name("x" * 1000, "w")) == 255


def test_descriptions_are_short_single_lines() -> None:
    assert describe(S.RUNNING, None, "linux@host") == "running on linux@host"
    assert describe(S.TIMED_OUT, "timed out after 60s", None) == "timed out: timed out after 60s"
    long = describe(S.ERROR, "clone failed:\n" + "x" * 500, None)
    assert len(long) == DESCRIPTION_MAX and long.endswith("\u2026") and "\n" not in long


def test_the_link_is_the_jobs_api_page_or_nothing() -> None:
    assert job_link("https://ci.example.com/", "abc") == "https://ci.example.com/v1/jobs/abc"
    assert job_link("", "abc") == ""
