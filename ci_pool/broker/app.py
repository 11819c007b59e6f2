"""The Celery app: one queue per capability, explicit routing, at-least-once delivery."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from ci_pool import defaults
from ci_pool.broker.keys import EXCHANGE, unacked_options
from ci_pool.broker.transport import AMQP_CLASS
from ci_pool.core.capabilities import Capability
from ci_pool.settings import Settings


def create_celery(
    settings: Settings,
    *,
    worker_queue: str | None = None,
    broker_url: str | None = None,
    declare: bool = True,
) -> Celery:
    """A Celery app configured from settings; connects to nothing until used.

    ``worker_queue``: the app of a worker consuming that queue (its unacknowledged
    messages are kept in keys of that queue). ``declare=False``: never write the routing
    tables (a registered runner's Redis user may only read them; publishers declare).
    """
    app = Celery(
        "ci_pool",
        broker=broker_url or settings.broker_url,
        include=["ci_pool.worker.tasks"],
        # One redis-py client per channel instead of one per ack and publish.
        amqp=AMQP_CLASS,
    )
    exchange = Exchange(EXCHANGE, type="direct", no_declare=not declare)
    transport: dict[str, object] = {
        "visibility_timeout": settings.visibility_timeout,
        # Sweep for messages of dead workers every restore_interval seconds (not 10x that).
        "unacked_restore_interval": settings.restore_interval,
        "unacked_restore_throttle": 1,
    }
    if worker_queue is not None:
        transport.update(unacked_options(worker_queue))
    app.conf.update(
        task_queues=[
            Queue(cap.queue, exchange, routing_key=cap.queue, no_declare=not declare)
            for cap in settings.capabilities.values()
        ],
        # No default queue to fall back to: a job goes to its capability's queue or nowhere.
        task_create_missing_queues=False,
        task_default_exchange="ci-pool",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        # A Redis blip must not kill running builds: they finish, their ack is lost, and
        # the redelivered message later finds nothing to claim.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # The store is the source of truth; Celery's results are never read.
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        # Flower's task view; off, a running Flower turns the workers' events on itself.
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    app.conf.ci_pool_settings = settings
    return app


def send_run_job(app: Celery, capability: Capability, job_id: str, countdown: float = 0) -> None:
    """Publish ``run_job(job_id)`` to the capability's queue."""
    app.send_task(
        defaults.RUN_JOB_TASK,
        args=[job_id],
        queue=capability.queue,
        routing_key=capability.queue,
        countdown=countdown or None,
    )
