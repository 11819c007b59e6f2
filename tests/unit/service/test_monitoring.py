"""Metrics in the Prometheus text format, on a real SQLite store (fakeredis for the runner
registry); Flower's credential rules."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from ci_pool import defaults
from ci_pool.broker.runners import RunnerInfo, RunnerRegistry
from ci_pool.core.specs import JobState
from ci_pool.embedded import free_port
from ci_pool.exceptions import ConfigError
from ci_pool.service.monitoring import (
    CONTENT_TYPE,
    DISPATCH_BUCKETS,
    DURATION_BUCKETS,
    FLOWER_AUTH_ENV,
    escape_label,
    flower_argv,
    flower_credentials,
    format_value,
    metrics_server,
    render_metrics,
)
from ci_pool.service.pool import Pool
from ci_pool.settings import Settings, load_settings
from ci_pool.store import Job, Store

WEIRD = 'we"ird\\cap\nx'
# Whole milliseconds: SQLite's julianday() keeps three decimals of a second.
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(None, home=tmp_path / "home", broker_url="redis://127.0.0.1:1/0")


@pytest.fixture
def pool(tmp_path: Path, settings: Settings) -> Iterator[Pool]:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.init_schema()
    p = Pool(settings, store)
    p.redis = fakeredis.FakeRedis()  # type: ignore[misc]
    yield p
    p.redis.close()
    store.close()


def new_job(store: Store, capability: str = "linux") -> Job:
    return store.create_job(
        name="build",
        capability=capability,
        queue=capability,
        repo="https://git.example.com/org/app.git",
        ref="main",
        steps=[{"name": "run", "run": "make"}],
        timeout_s=60,
        max_attempts=1,
    )


def set_times(store: Store, job_id: str, **times: datetime) -> None:
    with store.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**times))


def finished(
    store: Store, duration: float, latency: float, ended: float = 60, cap: str = "linux"
) -> Job:
    """A job run through the store for real, then dated: it waited ``latency`` seconds,
    ran ``duration`` seconds and finished ``ended`` seconds before NOW."""
    job = new_job(store, cap)
    claim = store.claim(job.id, "linux@a", 30)
    assert claim is not None
    store.finish(job.id, claim.job.attempt, JobState.SUCCEEDED, runner_id="linux@a", exit_code=0)
    end = NOW - timedelta(seconds=ended)
    start = end - timedelta(seconds=duration)
    set_times(
        store,
        job.id,
        queued_at=start - timedelta(seconds=latency),
        started_at=start,
        finished_at=end,
    )
    return job


def register(client: Any, runner_id: str, capability: str, slots: int = 2, **extra: Any) -> None:
    RunnerRegistry(client, ttl=60).heartbeat(
        RunnerInfo(
            runner_id=runner_id,
            capability=capability,
            queue=capability,
            host="h",
            pid=1,
            concurrency=slots,
            version="0.1.0",
            started_at=time.time(),
            extra=extra,
        )
    )


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], sample: str, **labels: str) -> float:
    family = sample.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
    found = [s.value for s in fams[family].samples if s.name == sample and dict(s.labels) == labels]
    assert len(found) == 1, (sample, labels, fams[family].samples)
    return float(found[0])


def test_escaping_and_numbers() -> None:
    assert escape_label(WEIRD) == 'we\\"ird\\\\cap\\nx'
    assert escape_label("plain") == "plain"
    assert format_value(3) == "3"
    assert format_value(2.5) == "2.5"
    assert format_value(float("inf")) == "+Inf"
    assert format_value(float("nan")) == "NaN"


def test_render_from_a_real_store(pool: Pool) -> None:
    store = pool.store
    for duration, latency in ((0.5, 0.05), (3, 0.3), (20, 2), (20, 2)):
        finished(store, duration, latency)
    finished(store, 4000, 10)  # finished within the hour, started before it
    finished(store, 5, 1, ended=7200)  # outside the window altogether
    running = new_job(store)
    assert store.claim(running.id, "linux@a", 30) is not None
    set_times(store, running.id, queued_at=NOW - timedelta(seconds=6), started_at=NOW)
    waiting = new_job(store, "android")
    set_times(store, waiting.id, queued_at=NOW - timedelta(seconds=30))
    new_job(store, "android")
    new_job(store, WEIRD)
    register(pool.redis, "linux@a", "linux", slots=1)  # its one slot runs `running`
    register(pool.redis, "linux@b", "linux", draining=True)
    register(pool.redis, "linux@c", "linux")
    register(pool.redis, "android@d", "android")
    register(pool.redis, "android@gone", "android")
    pool.redis.delete(defaults.RUNNER_KEY.format(runner_id="android@gone"))  # killed: expired

    text = render_metrics(pool, now=NOW)
    fams = families(text)

    # HELP and TYPE once per family, before its samples.
    for name in fams:
        assert text.count(f"# HELP {name} ") == 1 and text.count(f"# TYPE {name} ") == 1
        assert text.index(f"# TYPE {name} ") < text.index(f"\n{name}")
    # A label value with a quote, a backslash and a newline survives the round trip.
    assert 'ci_pool_queue_depth{capability="we\\"ird\\\\cap\\nx"} 1' in text
    assert value(fams, "ci_pool_queue_depth", capability=WEIRD) == 1
    assert value(fams, "ci_pool_queue_depth", capability="android") == 2
    assert value(fams, "ci_pool_queue_depth", capability="deploy") == 0
    assert value(fams, "ci_pool_oldest_wait_seconds", capability="android") == pytest.approx(30)
    assert value(fams, "ci_pool_oldest_wait_seconds", capability="linux") == 0
    assert value(fams, "ci_pool_jobs", state="succeeded") == 6
    assert value(fams, "ci_pool_jobs", state="running") == 1
    assert value(fams, "ci_pool_jobs", state="queued") == 3
    assert value(fams, "ci_pool_jobs", state="failed") == 0

    def buckets(name: str, bounds: tuple[float, ...], cap: str) -> list[float]:
        les = [repr(b) for b in bounds] + ["+Inf"]
        return [value(fams, f"{name}_bucket", capability=cap, le=le) for le in les]

    durations = buckets("ci_pool_job_duration_seconds", DURATION_BUCKETS, "linux")
    # le=  1  5  15  60  300  900  3600  +Inf  over 0.5, 3, 20, 20, 4000
    assert durations == [1, 2, 2, 4, 4, 4, 4, 5]
    assert value(fams, "ci_pool_job_duration_seconds_count", capability="linux") == 5
    assert value(fams, "ci_pool_job_duration_seconds_sum", capability="linux") == pytest.approx(
        4043.5, abs=0.01
    )
    # Dispatch: the four started within the hour and the running job (6 s).
    dispatch = buckets("ci_pool_dispatch_latency_seconds", DISPATCH_BUCKETS, "linux")
    # le=  0.1 0.25 0.5 1  2.5 5  15 60 300 +Inf
    assert dispatch == [1, 1, 2, 2, 4, 4, 5, 5, 5, 5]
    assert value(fams, "ci_pool_dispatch_latency_seconds_sum", capability="linux") == (
        pytest.approx(10.35, abs=0.01)
    )
    for cap in ("android", "deploy", WEIRD):
        assert buckets("ci_pool_job_duration_seconds", DURATION_BUCKETS, cap)[-1] == 0

    runners = {
        (s.labels["capability"], s.labels["state"]): s.value
        for s in fams["ci_pool_runners"].samples
        if s.labels["capability"] in ("linux", "android")
    }
    assert runners == {
        ("linux", "online"): 1,
        ("linux", "busy"): 1,
        ("linux", "draining"): 1,
        ("linux", "lost"): 0,
        ("android", "online"): 1,
        ("android", "busy"): 0,
        ("android", "draining"): 0,
        ("android", "lost"): 1,
    }
    assert value(fams, "ci_pool_runner_slots", capability="linux") == 5
    assert value(fams, "ci_pool_broker_up") == 1


def test_histograms_are_cumulative_with_inf_equal_to_count(pool: Pool) -> None:
    for i in range(40):
        finished(pool.store, duration=i * 37.0 % 1900, latency=i * 0.4 % 7, ended=i)
    fams = families(render_metrics(pool, now=NOW))
    for name in ("ci_pool_job_duration_seconds", "ci_pool_dispatch_latency_seconds"):
        counts = [s.value for s in fams[name].samples if s.name == f"{name}_bucket"]
        assert counts == sorted(counts)
        assert counts[-1] == value(fams, f"{name}_count", capability="linux") == 40


def test_broker_down_reports_zero_and_no_runners(pool: Pool) -> None:
    new_job(pool.store)
    pool.redis.close()
    pool.redis = redis.Redis(port=free_port(), socket_connect_timeout=2)  # type: ignore[misc]
    fams = families(render_metrics(pool))
    assert value(fams, "ci_pool_broker_up") == 0
    assert value(fams, "ci_pool_queue_depth", capability="linux") == 1
    assert not fams["ci_pool_runners"].samples


def test_fast_on_100k_jobs(pool: Pool) -> None:
    states = [s.value for s in JobState]

    def at(seconds_ago: int) -> str:
        # As SQLAlchemy stores a UTCDateTime on SQLite; the DB-API insert keeps the setup short.
        return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%d %H:%M:%S.%f")

    rows = [
        (
            f"j{i:07d}",
            ("linux", "android", "deploy")[i % 3],
            states[i % len(states)],
            at(i % 7200 + i % 50 + 1),
            at(i % 7200 + i % 50),
            at(i % 7200),
        )
        for i in range(100_000)
    ]
    with pool.store.session() as s:
        s.connection().exec_driver_sql(
            "INSERT INTO jobs (id, name, capability, queue, repo, ref, steps, env, labels, "
            "timeout_s, secrets, artifacts, checkout, needs, continue_on_error, matrix, fail_fast, "
            "outputs_spec, outputs, state, attempt, max_attempts, cancel_requested, queued_at, "
            "started_at, finished_at, created_at, updated_at) VALUES (?, '', ?, 'q', 'r', 'main', "
            "'[]', '{}', '[]', 60, '[]', '[]', '{}', '[]', 0, '{}', 1, '{}', '{}', ?, 1, 1, 0, "
            "?, ?, ?, ?, ?)",
            [(*r, r[-1], r[-1]) for r in rows],
        )
    started = time.perf_counter()
    fams = families(render_metrics(pool, now=NOW))
    took = time.perf_counter() - started
    assert sum(s.value for s in fams["ci_pool_jobs"].samples) == 100_000
    # Half the jobs ended within the hour: the worst case, not the usual one.
    assert value(fams, "ci_pool_job_duration_seconds_count", capability="linux") == pytest.approx(
        100_000 / 3 / 2, rel=0.01
    )
    assert value(fams, "ci_pool_job_duration_seconds_sum", capability="linux") > 0
    # A sanity bound (grouped queries take ~0.3 s here); a load of 9 once pushed it past 2 s.
    assert took < 10.0, f"render_metrics took {took:.2f}s on 100k jobs"


def test_server_answers_metrics_and_404(pool: Pool) -> None:
    port = free_port()
    server = metrics_server(pool, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE
            assert "ci_pool_broker_up 1" in resp.read().decode()
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        assert caught.value.code == 404
        caught.value.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# -- Flower's credentials ------------------------------------------------------------------


def test_flower_refuses_to_run_without_credentials(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(FLOWER_AUTH_ENV, raising=False)
    with pytest.raises(ConfigError, match=FLOWER_AUTH_ENV):
        flower_credentials(settings)
    for bad in ("admin", "admin:", ":pw", "admin:a,b", "admin:pw\n"):
        with pytest.raises(ConfigError, match="flower_auth"):
            flower_credentials(settings, bad)


def test_flower_credentials_from_env_or_option(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FLOWER_AUTH_ENV, "ops:from-env")
    assert flower_credentials(settings) == "ops:from-env"
    assert flower_credentials(settings, "cli:pass:with:colons") == "cli:pass:with:colons"
    argv = flower_argv(5555, "127.0.0.1", "ops:pw")
    assert argv[0] == "flower"
    assert {"--address=127.0.0.1", "--port=5555", "--basic_auth=ops:pw"} <= set(argv)


def test_queue_status_counts_infra_errors_apart_from_failed_builds() -> None:
    from collections import Counter

    from ci_pool.service.views import queue_statuses
    from ci_pool.store.jobs import FinishedJobs, JobCounts

    now = datetime.now(UTC)
    counts = JobCounts({("linux", "queued"): 2}, {"linux": now - timedelta(seconds=30)}, {})
    ended = Counter({"succeeded": 3, "failed": 1, "timed_out": 1, "error": 2})
    finished = {"linux": FinishedJobs(ended, [1.0, 2.0, 3.0])}
    rows = {r.capability: r for r in queue_statuses(["linux", "iso"], counts, finished, None, now)}
    linux = rows["linux"]
    assert (linux.finished_1h, linux.failed_1h, linux.errors_1h) == (7, 2, 2)
    assert (linux.queued, linux.oldest_wait_s, linux.p50_s) == (2, 30.0, 2.0)
    assert (linux.workers, linux.slots) == (None, None)  # the broker did not answer
    assert rows["iso"].queued == 0 and rows["iso"].p50_s is None
