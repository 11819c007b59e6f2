"""Baseline for bench/dispatch.py: a bare Celery app with one ``noop`` task.

The app copies ci-pool's delivery settings (acks_late, prefetch 1, reject on worker
lost, no result backend, JSON, task events, broker transport options) from
``ci_pool.broker.app.create_celery`` so the only difference left is what the task does.
The task records when it started by RPUSHing ``"<i> <time.time()>"`` to a Redis list
that the driver BLPOPs; there is no result backend.

Configured by environment (set by the driver):
  BENCH_BROKER_URL    redis://127.0.0.1:<port>/0
  BENCH_CONFIG        the ci-pool.toml the ci-pool side uses (for identical settings)
  BENCH_QUEUE         queue name (default bare-noop)
  BENCH_RESULTS_KEY   list the task pushes to (default bench:bare:started)
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery
from kombu import Exchange, Queue

from ci_pool.broker.app import create_celery
from ci_pool.settings import load_settings

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bare-noop")
RESULTS_KEY = os.environ.get("BENCH_RESULTS_KEY", "bench:bare:started")
TASK_NAME = "bench.noop"

#: ci-pool's Celery settings that change delivery cost or guarantees; copied verbatim.
MIRRORED_KEYS = (
    "task_acks_late",
    "task_reject_on_worker_lost",
    "worker_prefetch_multiplier",
    "broker_transport_options",
    "broker_connection_retry_on_startup",
    "worker_cancel_long_running_tasks_on_connection_loss",
    "task_ignore_result",
    "result_backend",
    "task_serializer",
    "accept_content",
    "worker_send_task_events",
    "task_send_sent_event",
    "worker_hijack_root_logger",
    "enable_utc",
)


def make_app(broker_url: str = BROKER_URL, config: str | None = None) -> Celery:
    config = config or os.environ.get("BENCH_CONFIG") or None
    reference = create_celery(load_settings(config, broker_url=broker_url)).conf
    app = Celery("bench_bare", broker=broker_url)
    exchange = Exchange("bench-bare", type="direct")
    app.conf.update({key: reference[key] for key in MIRRORED_KEYS})
    app.conf.update(
        task_queues=[Queue(QUEUE, exchange, routing_key=QUEUE)],
        task_create_missing_queues=False,
        task_default_exchange="bench-bare",
    )
    return app


app = make_app()
_client: redis.Redis | None = None


@app.task(name=TASK_NAME, acks_late=True, ignore_result=True)
def noop(i: int) -> None:
    started = time.time()
    global _client
    if _client is None:  # one connection per pool process, made after the fork
        _client = redis.Redis.from_url(BROKER_URL)
    _client.rpush(RESULTS_KEY, f"{i} {started!r}")
