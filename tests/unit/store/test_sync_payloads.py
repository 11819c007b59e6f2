"""``--sync`` payloads do not pile up: one that no job names is removed by the periodic
sweep once older than ``sync_payload_max_age``, and a refused submission keeps none."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from ci_pool.core.specs import JobState, parse_job_spec
from ci_pool.core.sync import SyncSource
from ci_pool.exceptions import InputError, PolicyDenied
from ci_pool.service.reaper import Reaper
from ci_pool.settings import load_settings
from ci_pool.store import Store
from ci_pool.store.models import utcnow
from ci_pool.store.sync import SyncPayloadRow
from tests.unit.store.conftest import RecordingPool

REPO = "git://127.0.0.1/org/app.git"
SHA = "b" * 40


def upload(pool: RecordingPool, text: str, age_s: float = 0) -> SyncSource:
    source = pool.store.put_sync_payload("patch", text.encode())
    if age_s:
        with pool.store.session() as s:
            s.execute(
                update(SyncPayloadRow)
                .where(SyncPayloadRow.sha256 == source.sha256)
                .values(at=utcnow() - timedelta(seconds=age_s))
            )
    return source


def job_body(source: SyncSource, capability: str = "linux", **extra: object) -> dict[str, object]:
    return {
        "repo": REPO,
        "ref": SHA,
        "capability": capability,
        "steps": [{"run": "true"}],
        "checkout": {"sync": source.model_dump()},
        **extra,
    }


WORKFLOW = "on: push\njobs:\n  a:\n    runs-on: {cap}\n    steps:\n      - run: x\n"


def run(pool: RecordingPool, source: SyncSource, capability: str = "linux") -> str:
    """A one-job pipeline whose checkout carries ``source``; its id."""
    row = pool.submit_pipeline(
        WORKFLOW.format(cap=capability), "w.yml", REPO, "main", commit=SHA, sync=source
    )
    return row.id


def kept(pool: RecordingPool, source: SyncSource) -> bool:
    return pool.store.sync_payload(source.sha256) is not None


def test_the_sweep_removes_old_payloads_no_job_names(pool: RecordingPool) -> None:
    named = upload(pool, "named\n", age_s=7200)
    by_cancelled = upload(pool, "named by a cancelled job\n", age_s=7200)
    unnamed_old = upload(pool, "nobody\n", age_s=7200)
    unnamed_new = upload(pool, "just uploaded\n")
    run(pool, named)
    cancelled = run(pool, by_cancelled)
    pool.cancel_pipeline(cancelled)
    assert {j.state for j in pool.store.pipeline_jobs(cancelled)} == {JobState.CANCELLED}

    swept = Reaper(pool.store, None, pool.publish, sync_payload_max_age=3600).sweep()  # type: ignore[arg-type]

    assert swept.sync_payloads == 1
    assert not kept(pool, unnamed_old)
    assert kept(pool, named) and kept(pool, by_cancelled)  # a cancelled job can be retried
    assert kept(pool, unnamed_new)  # its submission may still be on its way
    # past the age, a payload no job names goes at the next sweep
    assert pool.store.sweep_sync_payloads(utcnow() + timedelta(seconds=1)) == 1
    assert not kept(pool, unnamed_new)
    assert kept(pool, named)


def test_a_refused_submission_keeps_no_upload(pool: RecordingPool) -> None:
    # iso takes only signed submissions: local changes are refused there
    refused = upload(pool, "for iso\n")
    with pytest.raises(InputError, match="local changes"):
        pool.submit(parse_job_spec(job_body(refused, "iso"), allow_local_repos=False))
    assert not kept(pool, refused)

    # a secret the capability does not have: refused before anything is written
    secret = upload(pool, "with a secret\n")
    spec = parse_job_spec(job_body(secret, secrets=["NOPE"]), allow_local_repos=False)
    with pytest.raises(InputError):
        pool.submit(spec)
    assert not kept(pool, secret)

    # a workflow whose job policy denies: the pipeline is recorded rejected, its upload gone
    denied = upload(pool, "denied workflow\n")
    with pytest.raises((PolicyDenied, InputError)):
        run(pool, denied, "deploy")
    assert not kept(pool, denied)


def test_a_refusal_keeps_an_upload_another_job_names(pool: RecordingPool) -> None:
    shared = upload(pool, "shared\n")
    run(pool, shared)
    with pytest.raises(InputError, match="local changes"):
        pool.submit(parse_job_spec(job_body(shared, "iso"), allow_local_repos=False))
    assert kept(pool, shared)


def test_a_policy_denial_keeps_no_upload(store: Store, tmp_path: Path) -> None:
    caps = {"strict": {"mode": "host", "queue": "strict", "repos": ["org/other"]}}
    pool = RecordingPool(load_settings(None, home=tmp_path / "home", capabilities=caps), store)
    pool.published = []
    source = upload(pool, "denied by the repo allowlist\n")
    with pytest.raises(PolicyDenied):
        pool.submit(parse_job_spec(job_body(source, "strict"), allow_local_repos=False))
    assert not kept(pool, source)
    # the rejected job row is kept, and names the payload: it still does not hold it
    with pytest.raises(PolicyDenied):
        run(pool, upload(pool, "denied by the repo allowlist\n"), "strict")
    assert not kept(pool, source)
