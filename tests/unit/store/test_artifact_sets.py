"""Artifact sets: one job attempt holds a name in a run (two uploads of one name at once:
one wins), and artifacts past their retention lose files and rows to the periodic sweep,
while ``show``, the API view and a download say they expired."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from ci_pool.exceptions import NotFound
from ci_pool.service.job_views import job_view
from ci_pool.service.reaper import Reaper
from ci_pool.service.retention import sweep_expired_artifacts
from ci_pool.settings import load_settings
from ci_pool.store.artifact_sets import ArtifactSet
from ci_pool.store.models import utcnow
from ci_pool.worker.artifacts import ArtifactFile
from tests.unit.store.conftest import RecordingPool

REPO = "git://127.0.0.1/org/app.git"
SHA = "c" * 40
WORKFLOW = (
    "on: push\njobs:\n  a:\n    runs-on: linux\n    steps:\n      - run: x\n"
    "  b:\n    runs-on: linux\n    steps:\n      - run: y\n"
)
LATER = utcnow() + timedelta(days=1)


def two_jobs(pool: RecordingPool) -> tuple[str, str, str]:
    row = pool.submit_pipeline(WORKFLOW, "w.yml", REPO, "main", commit=SHA)
    a, b = sorted(pool.store.pipeline_jobs(row.id), key=lambda j: j.key or "")
    return row.id, a.id, b.id


def test_two_uploads_of_one_name_at_once_one_wins(pool: RecordingPool) -> None:
    run, a, b = two_jobs(pool)
    start = threading.Barrier(2)
    got: dict[str, str | None] = {}

    def claim(job_id: str) -> None:
        start.wait()
        got[job_id] = pool.store.claim_artifact(run, job_id, 1, "dist", LATER, overwrite=False)

    threads = [threading.Thread(target=claim, args=(j,)) for j in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winner = a if got[a] is None else b
    loser = b if winner == a else a
    assert got[winner] is None and got[loser] == winner  # the loser learns who holds it


def test_a_name_gives_way_to_a_retry_an_overwrite_or_after_it_expired(
    pool: RecordingPool,
) -> None:
    run, a, b = two_jobs(pool)
    store = pool.store
    assert store.claim_artifact(run, a, 1, "dist", LATER, overwrite=False) is None
    assert store.claim_artifact(run, a, 1, "dist", LATER, overwrite=False) == a  # twice
    assert store.claim_artifact(run, a, 2, "dist", LATER, overwrite=False) is None  # a retry
    assert store.claim_artifact(run, b, 1, "dist", LATER, overwrite=False) == a
    assert store.claim_artifact(run, b, 1, "dist", LATER, overwrite=True) is None
    store.release_artifact(run, "dist", b, 1)
    assert store.claim_artifact(run, a, 3, "dist", LATER, overwrite=False) is None
    # another run's name is its own
    assert store.claim_artifact("other-run", b, 1, "dist", LATER, overwrite=False) is None


def stored(pool: RecordingPool, job_id: str, name: str | None, files: dict[str, bytes]) -> Path:
    """Files of one attempt in the artifact store, indexed; the attempt's directory."""
    base = pool.settings.resolved_artifact_root / job_id / "1"
    index = []
    for rel, data in files.items():
        path = base / (f"{name}/{rel}" if name else rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        index.append(ArtifactFile(path.relative_to(base).as_posix(), len(data), "0" * 64))
    pool.store.add_artifacts(job_id, 1, index, name=name)
    return base


def test_the_sweep_removes_expired_artifacts_and_says_so(pool: RecordingPool) -> None:
    run, a, b = two_jobs(pool)
    store = pool.store
    past = utcnow() - timedelta(minutes=1)
    assert store.claim_artifact(run, a, 1, "old", past, overwrite=False) is None
    base_a = stored(pool, a, "old", {"f.txt": b"old", "sub/g.txt": b"g"})
    assert store.claim_artifact(run, a, 1, "fresh", LATER, overwrite=False) is None
    stored(pool, a, "fresh", {"f.txt": b"fresh"})
    base_b = stored(pool, b, None, {"out/report.txt": b"report"})  # the job's artifacts:
    store.add_artifact_set(run, b, 1, past)

    done = Reaper(
        store,
        None,  # type: ignore[arg-type]
        pool.publish,
        artifacts=lambda: sweep_expired_artifacts(pool),
    ).sweep()

    assert done.expired_artifacts == 2
    assert not (base_a / "old").exists() and (base_a / "fresh" / "f.txt").read_bytes() == b"fresh"
    assert not (pool.settings.resolved_artifact_root / b).exists()  # nothing left of it
    assert [x.path for x in store.artifacts(a, 1)] == ["fresh/f.txt"]
    assert store.artifacts(b, 1) == []
    view_a = job_view(store.get_job(a), pool)
    assert [e.name for e in view_a.expired_artifacts or []] == ["old"]
    assert [x.path for x in view_a.artifacts or []] == ["fresh/f.txt"]
    view_b = job_view(store.get_job(b), pool)
    assert [(e.name, e.attempt) for e in view_b.expired_artifacts or []] == [(None, 1)]
    with pytest.raises(NotFound, match=f"the artifacts of job {b} expired"):
        pool.download_artifacts(b, base_b.parent / "dl")
    assert store.expired_named(run, "old") is not None and store.expired_named(run, "fresh") is None
    # an expired name can be uploaded again; a second sweep finds nothing more
    assert store.claim_artifact(run, b, 1, "old", LATER, overwrite=False) is None
    assert sweep_expired_artifacts(pool) == 0


def test_retention_days_default_and_cap(tmp_path: Path) -> None:
    settings = load_settings(
        None, home=tmp_path, artifact_retention_days=7, artifact_retention_max_days=30
    )
    assert settings.artifact_days(None) == settings.artifact_days(0) == 7
    assert settings.artifact_days(3) == 3
    assert settings.artifact_days(90) == 30


def test_a_sweep_leaves_a_set_claimed_again_meanwhile(pool: RecordingPool) -> None:
    run, a, b = two_jobs(pool)
    store = pool.store
    past = utcnow() - timedelta(minutes=1)
    assert store.claim_artifact(run, a, 1, "dist", past, overwrite=False) is None
    (due,) = store.due_artifact_sets(utcnow())
    with store.session() as s:  # another job took the name over meanwhile (overwrite)
        s.execute(update(ArtifactSet).where(ArtifactSet.id == due.id).values(job_id=b))
    assert store.expire_artifact_set(due) == 0
    assert store.expired_named(run, "dist") is None
