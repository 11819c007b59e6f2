"""The reaper: finds jobs the pool lost track of and puts them back on track.

- a ``running`` job whose lease expired (its worker was killed, its host lost) is closed as
  ``error/runner_lost``, its leftover container removed where this host can see it, and
  re-queued while attempts remain;
- a ``queued`` job with no message in the broker (Redis flushed, or restarted without
  persistence) gets its message again;
- a running pipeline whose blocked jobs wait on needs that have ended is advanced;
- Idempotency-Keys past their lifetime are forgotten, and webhook content keys past the
  replay window;
- commit statuses still due on their forge are sent (``statuses``, see ``service.forge``);
- registered runners' Redis ACL users that Redis lost (restarted without an ACL file) are
  re-created (``service.runner_users``), and a lost runner's user loses its job's log stream;
- ``--sync`` payloads no job names, older than ``sync_payload_max_age``, are removed, and
  artifacts past their retention (``artifacts``, see ``service.retention``).

The store is the source of truth, so every step is a fenced transition: a reaper running
beside a live worker, or two reapers, can never run a job twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import redis

from ci_pool import defaults
from ci_pool.broker.keys import queue_keys, runner_queue, unacked_keys
from ci_pool.broker.runners import RunnerRegistry
from ci_pool.core.retry import Next, lost_reason
from ci_pool.core.scheduler import PipelineScheduler
from ci_pool.core.specs import JobState
from ci_pool.service.runner_users import RunnerUsers
from ci_pool.store import Store
from ci_pool.store.deliveries import forget_content_keys
from ci_pool.store.idempotency import forget_expired
from ci_pool.store.models import utcnow

log = logging.getLogger(__name__)


@dataclass
class Sweep:
    """What one pass did."""

    lost: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    advanced: list[str] = field(default_factory=list)
    forgotten_keys: int = 0
    statuses: int = 0
    sync_payloads: int = 0
    expired_artifacts: int = 0
    #: Runners whose Redis ACL user was missing and was re-created.
    restored_users: list[str] = field(default_factory=list)


class Reaper:
    """One sweep over the store and the broker; ``ci-pool beat`` runs it in a loop."""

    def __init__(
        self,
        store: Store,
        broker: redis.Redis,
        publish: Callable[[str, str], None],
        *,
        resend_after: float = 10.0,
        remove_containers: Callable[[str], int] | None = None,
        unacked_grace: float = defaults.RETRY_BACKOFF_MAX + 30,
        webhook_replay_window: float = defaults.WEBHOOK_REPLAY_WINDOW,
        statuses: Callable[[], int] | None = None,
        sync_payload_max_age: float = defaults.SYNC_PAYLOAD_MAX_AGE,
        artifacts: Callable[[], int] | None = None,
        runner_ttl: float = defaults.RUNNER_TTL,
        runner_users: RunnerUsers | None = None,
    ):
        self.store = store
        self.broker = broker
        self.publish = publish  # (capability, job_id)
        self.resend_after = resend_after
        self.remove_containers = remove_containers
        #: A message delivered this recently may still be claimed (or waits out a retry
        #: countdown in its worker); older ones of queued jobs are sent again.
        self.unacked_grace = unacked_grace
        self.webhook_replay_window = webhook_replay_window
        #: Sends the commit statuses due; returns how many reached their forge.
        self.statuses = statuses
        self.sync_payload_max_age = sync_payload_max_age
        #: Removes the artifacts past their retention; returns how many.
        self.artifacts = artifacts
        self.runner_ttl = runner_ttl
        #: Registered runners' Redis users (None: no registered runner is served here).
        self.runner_users = runner_users

    def sweep(self) -> Sweep:
        done = Sweep()
        if self.runner_users is not None:
            try:
                done.restored_users = self.runner_users.restore_missing()
            except Exception:  # Redis away: the next sweep tries again
                log.exception("re-creating runners' Redis users failed")
        self._expired_leases(done)
        self._lost_messages(done)
        self._stalled_pipelines(done)
        done.forgotten_keys = forget_expired(self.store)
        done.forgotten_keys += forget_content_keys(self.store, self.webhook_replay_window)
        if self.statuses is not None:
            try:
                done.statuses = self.statuses()
            except Exception:  # a forge or its outbox never stops the reaper's other work
                log.exception("sending commit statuses failed")
        cutoff = utcnow() - timedelta(seconds=self.sync_payload_max_age)
        done.sync_payloads = self.store.sweep_sync_payloads(cutoff)
        if self.artifacts is not None:
            try:
                done.expired_artifacts = self.artifacts()
            except Exception:  # a file that cannot go now goes at a later sweep
                log.exception("removing expired artifacts failed")
        return done

    def _expired_leases(self, done: Sweep) -> None:
        for job in self.store.expired_leases(utcnow()):
            closed = self.store.close_attempt(
                job.id,
                job.attempt,
                JobState.ERROR,
                runner_id="reaper",
                reason=lost_reason(job.runner_id),
                lease_expired=True,
                backoff=0,
            )
            if closed is None:
                continue  # it heartbeated or finished meanwhile
            lost, decision = closed
            done.lost.append(job.id)
            log.warning("job %s: runner %s lost", job.id, job.runner_id)
            if self.runner_users is not None and job.runner_id:
                self.runner_users.refresh_quietly(job.runner_id)
            if self.remove_containers is not None:
                try:
                    self.remove_containers(job.id)
                except Exception:  # the container may live on another host
                    log.exception("job %s: could not remove its container here", job.id)
            if decision.next is Next.REQUEUE:
                self.publish(job.capability, job.id)
                done.requeued.append(job.id)
            elif lost.pipeline_id:
                done.advanced.append(lost.pipeline_id)

    def _in_broker(self, queues: set[str]) -> str:
        """Every message waiting in these queues, plus the unacknowledged ones delivered
        recently. A queued job's message that a worker took long ago without claiming the
        job belongs to a worker that died: it does not count as held."""
        # kombu's hash of delivered, unacknowledged messages (held by live or dead
        # workers) and the sorted set of their delivery times: one pair per queue.
        pipe = self.broker.pipeline(transaction=False)
        for queue in sorted(queues):
            for key in queue_keys(queue):
                pipe.lrange(key, 0, -1)
        for queue in sorted(queues):
            pipe.zrangebyscore(unacked_keys(queue)[1], time.time() - self.unacked_grace, "+inf")
        replies = pipe.execute()
        lists, recent = replies[: -len(queues)], replies[-len(queues) :]
        chunks = [_text(v) for values in lists for v in values]
        for queue, tags in zip(sorted(queues), recent, strict=True):
            if tags:
                held = self.broker.hmget(unacked_keys(queue)[0], tags)
                chunks += [_text(v) for v in held if v]
        return "\n".join(chunks)

    def _lost_messages(self, done: Sweep) -> None:
        cutoff = utcnow() - timedelta(seconds=self.resend_after)
        waiting = self.store.queued_before(cutoff)
        if not waiting:
            return
        queues = {j.queue for j in waiting}
        if any(j.runner for j in waiting):
            # Jobs sent by name wait in their runner's own queue; one of a runner no longer
            # live counts as gone (sent again to another match, or kept until one appears).
            live = RunnerRegistry(self.broker, self.runner_ttl).live()
            queues |= {runner_queue(r.queue, r.runner_id) for r in live}
        held = self._in_broker(queues)
        for job in waiting:
            if job.id not in held:
                if job.runner:
                    log.info("job %s: (re)sending to a live runner matching %r", job.id, job.runner)
                else:
                    log.warning("job %s: queued but its message is gone; sending it again", job.id)
                self.publish(job.capability, job.id)
                done.resent.append(job.id)

    def _stalled_pipelines(self, done: Sweep) -> None:
        running = self.store.running_pipelines()
        scheduler = PipelineScheduler(self.store, self.publish)
        for pipeline_id in running:
            before = [j.state for j in self.store.pipeline_jobs(pipeline_id)]
            scheduler.advance(pipeline_id)
            after = [j.state for j in self.store.pipeline_jobs(pipeline_id)]
            if before != after and pipeline_id not in done.advanced:
                done.advanced.append(pipeline_id)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
