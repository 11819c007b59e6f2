"""Admission of one job: the capability it routes to, its time limit and its image."""

from __future__ import annotations

from typing import Any

import pytest

from ci_pool.core.admission import Admission
from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.specs import JobSpec, StepSpec
from ci_pool.exceptions import CapabilityNotFound, InputError

CAPS = {
    n: Capability(**d)
    for n, d in merge_capabilities(
        {"deploy": {"default_timeout": 9000}, "android": {"allow_container_override": True}}
    ).items()
}
POOL = Admission(CAPS, max_job_timeout=7200)


def spec(**fields: Any) -> JobSpec:
    return JobSpec(repo="https://git.example/org/app.git", steps=(StepSpec(run="make"),), **fields)


def test_a_job_gets_what_it_asks_for_up_to_the_limit() -> None:
    cap, timeout = POOL.admit(spec(labels=("Linux",), timeout=7200))
    assert (cap.name, timeout) == ("linux", 7200)


def test_a_job_over_the_limit_is_refused_naming_the_setting() -> None:
    with pytest.raises(InputError) as info:
        POOL.admit(spec(capability="linux", timeout=7260))
    assert info.value.field == "timeout"
    assert str(info.value) == (
        "timeout: 7260 s (121 minutes) is above the pool's limit, max_job_timeout = 7200 s "
        "(120 minutes); ask for less, or have an operator raise max_job_timeout in ci-pool.toml"
    )


def test_without_a_timeout_the_capability_default_is_held_to_the_limit() -> None:
    assert POOL.admit(spec(capability="linux")).timeout == 3600
    assert POOL.admit(spec(capability="deploy")).timeout == 7200


def test_an_image_override_only_where_the_capability_allows_it() -> None:
    assert POOL.admit(spec(capability="android", image="debian:12")).capability.name == "android"
    assert POOL.admit(spec(capability="linux", image="ci-pool/linux:latest")).timeout == 3600
    with pytest.raises(InputError) as info:
        POOL.admit(spec(capability="linux", image="debian:12"))
    assert info.value.field == "image"
    assert "capability 'linux' runs only its own image (ci-pool/linux:latest)" in str(info.value)


def test_every_problem_is_listed_by_check() -> None:
    admitted, problems = POOL.check(spec(capability="linux", image="x:1", timeout=99999))
    assert admitted is None
    assert [p.field for p in problems] == ["timeout", "image"]


def test_routing_follows_the_default_capability() -> None:
    with pytest.raises(InputError, match="needs a label besides self-hosted"):
        POOL.admit(spec(labels=("self-hosted",)))
    pool = Admission(CAPS, default_capability="audit")
    assert pool.admit(spec(labels=("self-hosted",))).capability.name == "audit"
    with pytest.raises(CapabilityNotFound):
        pool.admit(spec(labels=("self-hosted", "gpu")))
