"""Runner names (host-qualified, sanitized, from a pattern) and the globs that target them."""

from __future__ import annotations

import pytest

from ci_pool.core.runner_names import (
    check_name,
    check_runner_glob,
    default_name,
    name_matches,
    render_name,
    sanitize,
)
from ci_pool.core.specs import JobSpec
from ci_pool.exceptions import InputError


def test_default_name_is_the_short_host_the_capability_and_the_index() -> None:
    assert default_name("Build1.lan", "linux", 1) == "build1-linux-1"
    assert default_name("BUILD_2", "flutter-web", 12) == "build-2-flutter-web-12"
    # A very long host keeps the capability and index whole, within 63 characters.
    long = default_name("h" * 80, "android", 3)
    assert len(long) == 63 and long.endswith("-android-3")


def test_a_pattern_takes_values_from_the_settings_sanitized() -> None:
    values = {"client": "ACME Corp", "env": "prod", "role": "build"}
    assert render_name("{client}-{env}-{role}-{n}", "h", "linux", 2, values) == (
        "acme-corp-prod-build-2"
    )
    with pytest.raises(ValueError, match=r"no value for \{client\}; set runner_name_values"):
        render_name("{client}-{n}", "h", "linux", 1, {})
    with pytest.raises(ValueError, match="runner_name_pattern"):
        render_name("{client", "h", "linux", 1, {"client": "a"})


def test_names_are_checked() -> None:
    assert sanitize("--A b..") == "a-b"
    assert check_name("client-a-1") == "client-a-1"
    for bad in ("", "-a", "A-1", "a/b", "a b", "x" * 64, "a@host"):
        with pytest.raises(ValueError, match="is not a runner name"):
            check_name(bad)


def test_runner_globs_are_bounded_and_match_whole_names() -> None:
    assert check_runner_glob("Client-ACME-*") == "client-acme-*"
    assert name_matches("client-acme-*", "client-acme-1")
    assert not name_matches("client-acme-*", "client-acmex")
    assert not name_matches("client-a-*", "client-b-1")
    # GitHub's filter syntax, as branch filters: [..] a class, ? makes the one before optional.
    assert name_matches("build[12]-linux-[0-9]", "build2-linux-3")
    assert name_matches("client-a-1?", "client-a-") and not name_matches("client-a-1?", "x")
    for bad in ("", "a/b", "a b", "x" * 129, "$(id)", "a,b"):
        with pytest.raises(InputError, match="is not a runner glob") as exc:
            check_runner_glob(bad)
        assert exc.value.field == "runner"


def test_a_job_spec_carries_a_checked_runner_glob() -> None:
    spec = JobSpec(repo="https://git.example/a/b.git", steps=[{"run": "true"}], runner="X-*")
    assert spec.runner == "x-*"
    with pytest.raises(ValueError, match="is not a runner glob"):
        JobSpec(repo="https://git.example/a/b.git", steps=[{"run": "true"}], runner="a;b")
