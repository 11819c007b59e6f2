"""What a limited token may read of a job's reasons (``ci_pool.api.access``), on a real
SQLite store: a pipeline rejected because policy denied a job of another capability."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_pool.api import access
from ci_pool.core.policy import Submitter
from ci_pool.exceptions import PolicyDenied
from ci_pool.service.pool import Pool
from ci_pool.settings import load_settings
from ci_pool.store.tokens import ApiToken

MIXED = """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: make
  ship-to-prod:
    needs: build
    runs-on: deploy
    steps:
      - run: ./ship
"""


@pytest.fixture
def pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:
    monkeypatch.delenv("CI_POOL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    p = Pool(load_settings(None, home=tmp_path / "home"))
    yield p
    p.store.close()


def token(**limits: list[str]) -> ApiToken:
    return ApiToken(name="t", sha256="0" * 64, scopes=["read"], **limits)


def test_a_sibling_denied_outside_the_limits_is_not_named(pool: Pool) -> None:
    # A commit id instead of a branch: the deploy capability's ref allowlist denies it.
    with pytest.raises(PolicyDenied) as denied:
        pool.submit_pipeline(
            MIXED, "ci.yml", "https://git.example.org/org/app.git", "a" * 40, who=Submitter()
        )
    pipeline_id = str(denied.value).split("pipeline ", 1)[1].split(" ", 1)[0]
    build = next(j for j in pool.store.pipeline_jobs(pipeline_id) if j.key == "build")
    assert build.reason and "ship-to-prod" in build.reason and "deploy" in build.reason
    linux = access.reason_shown(pool, token(capabilities=["linux"]), build)
    assert linux is not None and "ship-to-prod" not in linux and "deploy" not in linux
    assert linux.startswith("pipeline rejected:")
    assert access.reason_shown(pool, token(), build) == build.reason
    both = token(capabilities=["linux", "deploy"])
    assert access.reason_shown(pool, both, build) == build.reason
