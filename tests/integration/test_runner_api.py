"""A runner that reaches the store only through the API: started with the broker URL, the
API URL and its credential (no database URL, no store in its home), it runs a pipeline end
to end on real Redis, Celery, Docker and uvicorn: logs, outputs, a step summary and an
annotation, a needs-chain that the API advances, an artifact passed between jobs, and a
cache saved by one job and restored by the next."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_pool import defaults
from ci_pool.embedded import RedisServer
from ci_pool.store import identities
from tests.apirunner import ApiPool, api_pool
from tests.conftest import GitServer

pytestmark = pytest.mark.integration

CAPABILITY = "apirunner"

WORKFLOW = """\
name: through-the-api
on: push
jobs:
  build:
    runs-on: apirunner
    outputs:
      word: ${{ steps.w.outputs.word }}
    steps:
      - id: w
        run: |
          echo "word=hello-from-build" >> "$GITHUB_OUTPUT"
          echo "## built through the API" >> "$GITHUB_STEP_SUMMARY"
          echo "::warning file=dist/app.txt::a note for the API"
          mkdir -p dist deps
          echo payload-of-build > dist/app.txt
          echo "dependency $RANDOM" > deps/d.txt
          cp deps/d.txt dist/dep-copy.txt
      - uses: actions/upload-artifact@v4
        with:
          name: bundle
          path: dist/
      - uses: actions/cache@v4
        id: cache
        with:
          path: deps
          key: deps-${{ github.run_id }}
      - run: echo "build cache-hit=${{ steps.cache.outputs.cache-hit }}"
  use:
    needs: build
    runs-on: apirunner
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: bundle
          path: got
      - uses: actions/cache/restore@v4
        id: c
        with:
          path: deps
          key: deps-${{ github.run_id }}
      - run: |
          echo "needs word=${{ needs.build.outputs.word }}"
          cat got/app.txt
          echo "cache hit=${{ steps.c.outputs.cache-hit }}"
          cmp deps/d.txt got/dep-copy.txt && echo "cache content matches"
"""


@pytest.fixture(scope="module")
def pool(
    session_dir: Path, redis_server: RedisServer, busybox_image: str, git_server: GitServer
) -> Iterator[ApiPool]:
    with api_pool(
        session_dir / "runner-api", redis_server, busybox_image, git_server, CAPABILITY
    ) as p:
        yield p


def test_a_runner_without_a_database_url_runs_a_pipeline_through_the_api(
    pool: ApiPool, git_server: GitServer, tmp_path: Path
) -> None:
    h = pool.harness
    credential = pool.register("test-host-apirunner-1")
    home = tmp_path / "runner-home"
    worker = pool.start_worker(home, credential)
    # The broker knows it by its registered name, and it holds no database URL.
    assert worker.runner_id == "test-host-apirunner-1"
    environ = Path(f"/proc/{worker.proc.pid}/environ").read_bytes().split(b"\0")
    assert not [e for e in environ if e.startswith(b"CI_POOL_STORE_URL=")]
    assert b"CI_POOL_API_URL=" + pool.api_url.encode() in environ
    assert "reaching the store through the API" in worker.log.read_text()

    wf = tmp_path / "wf.yml"
    wf.write_text(WORKFLOW)
    res = h.cli("run", str(wf), "--repo", git_server.url(), "--ref", "main", timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr + worker.log.read_text()

    store = h.pool().store
    jobs = {j.job_ref: j for j in store.list_jobs(limit=50) if j.pipeline_id}
    build, use = jobs["build"], jobs["use"]
    assert build.state == "succeeded" and use.state == "succeeded"
    # Claims, events and evidence carry the registered name.
    assert build.runner_id == use.runner_id == "test-host-apirunner-1"
    assert build.evidence is not None and build.evidence.runner_id == "test-host-apirunner-1"

    # Logs and outputs, written through the API, are in the pool's store.
    use_log = store.read_log(use.id)
    assert "needs word=hello-from-build" in use_log
    assert "payload-of-build" in use_log
    assert "cache hit=true" in use_log and "cache content matches" in use_log
    assert "build cache-hit=false" in store.read_log(build.id)
    assert build.outputs == {"word": "hello-from-build"}
    assert [s.markdown.strip() for s in store.summaries(build.id)] == ["## built through the API"]
    assert [(a.level, a.message) for a in store.annotations(build.id)] == [
        ("warning", "a note for the API")
    ]

    # The artifact is in the pool's artifact store, indexed with its sha256; the runner
    # kept no copy of it.
    rows = store.artifacts(build.id, build.attempt)
    assert sorted(r.path for r in rows) == ["bundle/app.txt", "bundle/dep-copy.txt"]
    root = h.settings().resolved_artifact_root / build.id / str(build.attempt)
    for row in rows:
        data = (root / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
    assert not list((home / "artifacts").rglob("*.txt"))

    # The cache entry went to the pool's cache, not to the runner's home.
    pool_cache = h.settings().resolved_cache_dir
    assert list(pool_cache.glob("*.tar"))
    assert not (home / "cache").exists() or not list((home / "cache").glob("*.tar"))

    # No store was ever opened on the runner's side.
    assert not (home / defaults.STORE_FILE).exists()
    assert not list(home.rglob("*.db"))


def test_a_runner_with_a_credential_refuses_a_database_url_and_a_revoked_one_exits(
    pool: ApiPool, tmp_path: Path
) -> None:
    credential = pool.register("test-host-apirunner-2")
    env = pool.worker_env(tmp_path / "home", credential)

    def worker(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ci_pool", "worker", "--capability", CAPABILITY],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    res = worker(CI_POOL_STORE_URL=f"sqlite:///{tmp_path / 'stray.db'}")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "store_url" in res.stderr and "must hold no database URL" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "stray.db").exists()

    identities.revoke_runner(pool.harness.pool().store, "test-host-apirunner-2", by="test")
    res = worker()
    # 77: a revoked runner's unit does not restart it (RestartPreventExitStatus=77).
    assert res.returncode == defaults.EXIT_REVOKED, res.stdout + res.stderr
    assert "refused this runner's credential" in res.stderr
    assert "revoked or unknown" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "home" / defaults.STORE_FILE).exists()
