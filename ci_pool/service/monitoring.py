"""What operators watch: pool metrics in the Prometheus text format (``ci-pool metrics``)
and Flower on the pool's broker with HTTP basic auth on (``ci-pool flower``).

Metrics come from the store (the source of truth) in a few grouped queries whose size
does not grow with the jobs table, plus the runner registry in Redis. The text format is
written by hand: https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from sqlalchemy import case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from ci_pool.addresses import is_loopback
from ci_pool.broker.app import create_celery
from ci_pool.broker.runners import RunnerRegistry
from ci_pool.core.specs import JobState
from ci_pool.exceptions import ConfigError, InputError
from ci_pool.service.pool import Pool
from ci_pool.service.views import runner_state
from ci_pool.settings import Settings, get_settings
from ci_pool.store.engine import seconds_between
from ci_pool.store.models import Job

#: Upper bounds (seconds) of the histogram buckets; ``+Inf`` is always added.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
DISPATCH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0)
#: The histograms cover jobs finished (started) within this window.
WINDOW = timedelta(hours=1)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: ``user:password`` for Flower's basic auth (until Settings has ``flower_auth``).
FLOWER_AUTH_ENV = "CI_POOL_FLOWER_AUTH"
#: A runner's state as ``ci-pool runners`` shows it; each runner is in exactly one.
RUNNER_STATES = ("online", "busy", "draining", "lost")


# -- the text format ----------------------------------------------------------------------


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Integers without a fraction, floats in full, infinities as ``+Inf``/``-Inf``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _bound(value: float) -> str:
    # ``le`` as Prometheus client libraries write it ("1.0", "+Inf"): series stay the same
    # whichever side normalises the label.
    return "+Inf" if math.isinf(value) else repr(float(value))


@dataclass(slots=True)
class Histogram:
    """Cumulative bucket counts (``counts[i]`` = observations <= ``bounds[i]``)."""

    bounds: tuple[float, ...]
    counts: list[int]
    count: int = 0
    total: float = 0.0


class Exposition:
    """Metric families written in order, each with its HELP and TYPE lines once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        self.lines.append(
            f"{name}{{{inner}}} {format_value(value)}" if inner else f"{name} {format_value(value)}"
        )

    def histogram(self, name: str, labels: dict[str, str], hist: Histogram) -> None:
        for bound, count in zip((*hist.bounds, math.inf), (*hist.counts, hist.count), strict=True):
            self.sample(f"{name}_bucket", {**labels, "le": _bound(bound)}, count)
        self.sample(f"{name}_sum", labels, hist.total)
        self.sample(f"{name}_count", labels, hist.count)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# -- collection -----------------------------------------------------------------------------


@dataclass(slots=True)
class Snapshot:
    """Everything one scrape reports; filled by :func:`collect`, written by :func:`render`."""

    capabilities: list[str]
    jobs_by_state: dict[str, int]
    queued: dict[str, int]
    oldest_wait: dict[str, float]
    durations: dict[str, Histogram]
    dispatch: dict[str, Histogram]
    broker_up: bool
    #: ``(capability, state) -> runners``; empty when the broker is down.
    runners: dict[tuple[str, str], int] = field(default_factory=dict)
    slots: dict[str, int] = field(default_factory=dict)


def _histograms(
    s: Session,
    dialect: str,
    start: InstrumentedAttribute[datetime | None],
    end: InstrumentedAttribute[datetime | None],
    since: datetime,
    bounds: tuple[float, ...],
) -> dict[str, Histogram]:
    """Per capability, ``end - start`` of the rows whose ``end`` is after ``since``: one
    grouped query returning one row per capability."""
    secs = seconds_between(dialect, start, end)
    q = (
        select(
            Job.capability,
            func.count(),
            func.coalesce(func.sum(secs), 0.0),
            *(func.sum(case((secs <= b, 1), else_=0)) for b in bounds),
        )
        .where(end >= since, start.is_not(None))
        .group_by(Job.capability)
    )
    return {
        cap: Histogram(bounds, [int(c or 0) for c in buckets], int(count), float(total))
        for cap, count, total, *buckets in s.execute(q)
    }


def collect(pool: Pool, now: datetime | None = None) -> Snapshot:
    """Read the store (grouped queries only) and the runner registry."""
    now = now or datetime.now(UTC)
    window = float(getattr(pool.settings, "metrics_window", 0) or 0) or WINDOW.total_seconds()
    since = now - timedelta(seconds=window)
    dialect = pool.store.engine.dialect.name
    counts = pool.store.job_counts()
    by_state = dict.fromkeys((s.value for s in JobState), 0) | counts.states()
    queued = {
        cap: n for (cap, state), n in counts.by_state.items() if state == JobState.QUEUED.value
    }
    oldest = {
        cap: max(0.0, (now - first).total_seconds()) for cap, first in counts.oldest_queued.items()
    }
    with pool.store.session(write=False) as s:
        durations = _histograms(
            s, dialect, Job.started_at, Job.finished_at, since, DURATION_BUCKETS
        )
        dispatch = _histograms(s, dialect, Job.queued_at, Job.started_at, since, DISPATCH_BUCKETS)
    registry = RunnerRegistry(pool.redis, pool.settings.runner_ttl)
    try:
        live, lost = registry.live(), registry.lost()
        broker_up = True
    except redis.RedisError:
        live, lost, broker_up = [], [], False
    caps = set(pool.settings.capabilities) | set(queued) | set(durations) | set(dispatch)
    snap = Snapshot(
        capabilities=sorted(caps | {r.capability for r in (*live, *lost)}),
        jobs_by_state=by_state,
        queued=queued,
        oldest_wait=oldest,
        durations=durations,
        dispatch=dispatch,
        broker_up=broker_up,
    )
    for cap in snap.capabilities if broker_up else ():
        mine = [r for r in live if r.capability == cap]
        per_state = dict.fromkeys(RUNNER_STATES, 0)
        for r in mine:
            per_state[runner_state(r, len(counts.running.get(r.runner_id, ())))] += 1
        per_state["lost"] = sum(1 for r in lost if r.capability == cap)
        snap.runners.update({(cap, state): n for state, n in per_state.items()})
        snap.slots[cap] = sum(r.concurrency for r in mine)
    return snap


def render(snap: Snapshot) -> str:
    """A snapshot in the Prometheus text exposition format (version 0.0.4)."""
    out = Exposition()
    out.family("ci_pool_queue_depth", "gauge", "Jobs queued in the store, per capability.")
    for cap in snap.capabilities:
        out.sample("ci_pool_queue_depth", {"capability": cap}, snap.queued.get(cap, 0))
    out.family(
        "ci_pool_oldest_wait_seconds",
        "gauge",
        "Seconds the oldest queued job of a capability has waited (0 when none waits).",
    )
    for cap in snap.capabilities:
        out.sample("ci_pool_oldest_wait_seconds", {"capability": cap}, snap.oldest_wait.get(cap, 0))
    out.family("ci_pool_jobs", "gauge", "Jobs in the store by state.")
    for state, n in sorted(snap.jobs_by_state.items()):
        out.sample("ci_pool_jobs", {"state": state}, n)
    for name, data, bounds, text in (
        (
            "ci_pool_job_duration_seconds",
            snap.durations,
            DURATION_BUCKETS,
            "Run time (finished - started) of the attempts that finished in the last window "
            "(a sliding window: read the buckets as they are, do not rate() them).",
        ),
        (
            "ci_pool_dispatch_latency_seconds",
            snap.dispatch,
            DISPATCH_BUCKETS,
            "Wait from queued to started of the attempts that started in the last window "
            "(a sliding window: read the buckets as they are, do not rate() them).",
        ),
    ):
        out.family(name, "histogram", text)
        for cap in snap.capabilities:
            hist = data.get(cap) or Histogram(bounds, [0] * len(bounds))
            out.histogram(name, {"capability": cap}, hist)
    out.family(
        "ci_pool_runners",
        "gauge",
        "Runners per capability and state, each runner counted once: online (live, a slot "
        "free), busy (every slot taken), draining, lost (stopped heartbeating without "
        "unregistering, within a day).",
    )
    for (cap, state), n in sorted(snap.runners.items()):
        out.sample("ci_pool_runners", {"capability": cap, "state": state}, n)
    out.family("ci_pool_runner_slots", "gauge", "Job slots (concurrency) of live runners.")
    for cap, n in sorted(snap.slots.items()):
        out.sample("ci_pool_runner_slots", {"capability": cap}, n)
    out.family("ci_pool_broker_up", "gauge", "1 when the broker (Redis) answered this scrape.")
    out.sample("ci_pool_broker_up", {}, 1 if snap.broker_up else 0)
    return out.text()


def render_metrics(pool: Pool, now: datetime | None = None) -> str:
    """The pool's metrics in the Prometheus text format."""
    return render(collect(pool, now))


# -- serving --------------------------------------------------------------------------------


def metrics_server(pool: Pool, port: int, address: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server answering ``GET /metrics``, on loopback only:
    it has neither TLS nor authentication (the API's /metrics has both)."""
    if not is_loopback(address):
        raise ConfigError(
            f"refusing to serve metrics on {address}: this server has no TLS and no "
            "authentication, so anyone who reaches the port reads the pool's metrics. Serve on "
            "127.0.0.1 (behind a proxy that adds TLS and auth), or scrape the API's /metrics "
            "with a read token (ci-pool api --tls-cert/--tls-key or --behind-proxy)",
            key="--address",
        )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._reply(404, "not found; metrics are at /metrics\n", "text/plain")
                return
            try:
                body = render_metrics(pool)
            except Exception as exc:  # a failed scrape answers 500; the server keeps serving
                print(f"ci-pool metrics: scrape failed: {exc!r}", file=sys.stderr)
                self._reply(500, f"cannot collect metrics ({type(exc).__name__})\n", "text/plain")
                return
            self._reply(200, body, CONTENT_TYPE)

        def _reply(self, code: int, body: str, ctype: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes are not logged."""

    try:
        server = ThreadingHTTPServer((address, port), Handler)
    except OSError as exc:
        raise InputError(
            f"cannot listen on {address}:{port}: {exc.strerror}", field="--serve"
        ) from None
    server.daemon_threads = True
    return server


def metrics(serve_port: int | None = None, address: str = "127.0.0.1") -> None:
    """Print the pool's metrics once, or serve GET /metrics on ``serve_port`` (the body
    of ``ci-pool metrics``)."""
    pool = Pool(get_settings())
    if serve_port is None:
        sys.stdout.write(render_metrics(pool))
        return
    server = metrics_server(pool, serve_port, address)
    print(f"serving http://{address}:{serve_port}/metrics (Ctrl-C to stop)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# -- Flower ---------------------------------------------------------------------------------


def flower_credentials(settings: Settings, explicit: str | None = None) -> str:
    """``user:password`` for Flower's basic auth: the option, the setting or the environment.
    There is no way to start Flower without one."""
    configured: Any = getattr(settings, "flower_auth", None)
    if configured is not None and hasattr(configured, "get_secret_value"):
        configured = configured.get_secret_value()
    raw = explicit or configured or os.environ.get(FLOWER_AUTH_ENV, "")
    if not raw:
        raise ConfigError(
            f"Flower runs with auth on: set {FLOWER_AUTH_ENV}=user:password "
            "(or pass --basic-auth user:password)",
            key="flower_auth",
        )
    user, sep, password = raw.partition(":")
    if not (sep and user and password):
        raise ConfigError("must be user:password, both non-empty", key="flower_auth")
    if "," in raw or any(ord(c) < 32 for c in raw):
        # Flower splits its credential list on commas: "u:a,b" would let "b" in.
        raise ConfigError("must not contain commas or control characters", key="flower_auth")
    return raw


def flower_argv(port: int, address: str, credentials: str) -> list[str]:
    """The ``celery`` command line (after the program name) that starts Flower."""
    return [
        "flower",
        f"--address={address}",
        f"--port={port}",
        f"--basic_auth={credentials}",
        # Flower's default, said out loud: it keeps telling workers to send events.
        "--enable_events=true",
    ]


def flower_command(
    settings: Settings,
    port: int | None = None,
    address: str | None = None,
    basic_auth: str | None = None,
) -> int:
    """Run Flower in this process on the pool's Celery app (its broker, its queues) until
    interrupted; returns the exit code. The broker URL and the credentials are handed over
    in memory, never on a command line that ``ps`` would show."""
    credentials = flower_credentials(settings, basic_auth)
    port = port or int(getattr(settings, "flower_port", 5555))
    address = address or str(getattr(settings, "flower_address", "127.0.0.1"))
    if not is_loopback(address):
        print(
            f"warning: Flower listens on {address}; basic auth over plain HTTP can be read on "
            "the network: put a TLS proxy in front of it",
            file=sys.stderr,
        )
    # Installing flower is what adds the "celery flower" command.
    if importlib.util.find_spec("flower") is None:
        raise ConfigError("Flower is not installed: pip install 'flower>=2.0'")
    app = create_celery(settings)
    code = app.start(flower_argv(port, address, credentials))
    return int(code or 0)
