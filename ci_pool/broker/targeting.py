"""Jobs sent to runners by name: a job whose spec carries a ``runner`` glob goes to the
own queue (``<queue>.<runner name>``) of one live runner of its capability whose name
matches, the least busy one; with none live, nothing is sent and the job stays queued
until the reaper finds a match (``Reaper`` re-sends queued jobs that have no message)."""

from __future__ import annotations

from collections.abc import Callable

import redis
from celery import Celery
from kombu import Exchange, Queue

from ci_pool import defaults
from ci_pool.broker.keys import EXCHANGE, runner_queue
from ci_pool.broker.runners import RunnerInfo, RunnerRegistry
from ci_pool.core.capabilities import Capability
from ci_pool.core.runner_names import name_matches


def runner_queue_of(queue: str, runner_id: str, *, declare: bool = True) -> Queue:
    """The kombu queue a runner consumes besides its capability's. ``declare=False``: the
    worker never writes the routing table (a registered runner's Redis user may only read
    it; the sender declares the queue when it sends the first job there)."""
    name = runner_queue(queue, runner_id)
    exchange = Exchange(EXCHANGE, type="direct", no_declare=not declare)
    return Queue(name, exchange, routing_key=name, no_declare=not declare)


def takes_jobs(info: RunnerInfo) -> bool:
    """A live runner that is neither draining nor unhealthy."""
    return not info.extra.get("draining") and not info.extra.get("unhealthy")


def matching(registry: RunnerRegistry, capability: str, glob: str) -> list[RunnerInfo]:
    """Live runners of ``capability`` whose names ``glob`` matches (taking jobs or not)."""
    return [r for r in registry.live(capability) if name_matches(glob, r.runner_id)]


def send_targeted(
    app: Celery,
    client: redis.Redis,
    cap: Capability,
    job_id: str,
    glob: str,
    busy: Callable[[str], int],
    *,
    countdown: float = 0,
    ttl: float = defaults.RUNNER_TTL,
) -> str | None:
    """Publish ``run_job(job_id)`` to the least busy live runner matching ``glob``
    (``busy(name)``: the jobs it runs; its queue's waiting messages count too). Returns
    the runner's name, or None when no live runner matches (nothing is sent)."""
    found = [r for r in matching(RunnerRegistry(client, ttl), cap.name, glob) if takes_jobs(r)]
    if not found:
        return None

    def load(info: RunnerInfo) -> tuple[float, str]:
        waiting = int(client.llen(runner_queue(cap.queue, info.runner_id)))
        return ((busy(info.runner_id) + waiting) / max(info.concurrency, 1), info.runner_id)

    target = min(found, key=load)
    queue = runner_queue_of(cap.queue, target.runner_id)
    app.send_task(
        defaults.RUN_JOB_TASK,
        args=[job_id],
        queue=queue,
        routing_key=queue.routing_key,
        countdown=countdown or None,
    )
    return target.runner_id
