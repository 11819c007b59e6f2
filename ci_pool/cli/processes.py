"""The long-running processes of a pool: ``worker``, ``beat``, ``metrics`` and ``flower``
(registered in ci_pool.cli.main). Their heavy imports (Celery, the store, Docker) happen
inside the commands, so the rest of the CLI starts without them."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from ci_pool.service.pool import Pool
    from ci_pool.service.reaper import Reaper
    from ci_pool.settings import Settings

err = Console(stderr=True, highlight=False, markup=False, emoji=False)


def worker(
    capability: Annotated[str, typer.Option(help="Capability whose queue to consume.")],
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once.")] = 1,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    pool_impl: Annotated[
        str, typer.Option("--pool", help="Celery pool: prefork, threads or solo.")
    ] = "prefork",
    max_jobs: Annotated[
        int | None, typer.Option(min=1, help="Exit after this many jobs (ephemeral runner).")
    ] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(min=0, help="Exit after this many idle seconds.")
    ] = None,
    max_lifetime: Annotated[
        float | None, typer.Option(min=0, help="Take no job after this many seconds; exit.")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Runner name (default: runner_id, else runner_name_pattern with the lowest "
            "free {n}, like build1-linux-1); unique pool-wide."
        ),
    ] = None,
) -> None:
    """Run a Celery worker on one capability's queue.

    With --max-jobs, --idle-timeout or --max-lifetime it exits cleanly at the limit: it
    stops taking jobs, lets the running one finish, and exits 0 (disposable runners)."""
    from ci_pool.broker.app import create_celery
    from ci_pool.broker.targeting import runner_queue_of
    from ci_pool.core.capabilities import route
    from ci_pool.service.forge import worker_notifier
    from ci_pool.service.pool import Pool
    from ci_pool.settings import get_settings
    from ci_pool.worker.lifecycle import Limits
    from ci_pool.worker.runner_store import through_api

    settings = get_settings()
    cap = route(settings.capabilities, capability)
    if cap.mode == "docker":
        from ci_pool import container_engine
        from ci_pool.exceptions import ExecutorError

        try:
            container_engine.connect(settings, timeout=5, ping=True).close()
        except ExecutorError as exc:
            err.print(
                Text.assemble(
                    ("warning:", "yellow"),
                    f" {exc}; jobs of {cap.name!r} will end in error until one does",
                ),
                soft_wrap=True,
            )
    from ci_pool.worker.identity import runner_secrets

    if name:
        settings = settings.model_copy(update={"runner_id": name})
    secrets = runner_secrets(settings, cap.name)
    if secrets is not None:
        # A registered runner: Redis as its own ACL user, which may read the routing
        # tables but not write them; its name is the one it registered.
        settings = settings.model_copy(
            update={
                "broker_url": secrets.broker_url(settings.broker_url),
                "runner_id": secrets.name,
            }
        )
        err.print(f"runner {secrets.name}: registered; Redis as {secrets.redis_username}")
    api_runner = through_api(settings)  # refuses a store URL beside the credential
    if api_runner:
        _check_credential(settings)
    else:
        Pool(settings).store.init_schema()  # tables exist before any job is claimed
    runner = _runner_name(settings, cap.name, name)
    settings = settings.model_copy(update={"runner_id": runner})
    capp = create_celery(settings, worker_queue=cap.queue, declare=secrets is None)
    own = runner_queue_of(cap.queue, runner, declare=secrets is None)
    capp.conf.task_queues = [*capp.conf.task_queues, own]
    capp.conf.ci_pool_capability = cap.name
    capp.conf.worker_concurrency = concurrency
    capp.conf.ci_pool_limits = Limits(max_jobs, idle_timeout, max_lifetime)
    capp.conf.ci_pool_started_at = datetime.now(UTC)
    # Commit statuses go out from the API's side for a runner without store access.
    capp.conf.ci_pool_status_notifier = None if api_runner else worker_notifier(settings)
    node = f"{runner}@{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    if secrets is not None:
        from ci_pool.broker.keys import worker_node

        node = worker_node(cap.name, secrets.name)  # its Redis user reaches this pidbox only
    capp.worker_main(
        [
            "worker",
            "-Q",
            f"{cap.queue},{own.name}",
            "-c",
            str(concurrency),
            "-n",
            node,
            "-l",
            loglevel,
            "-P",
            pool_impl,
            "--without-mingle",
            "--without-gossip",
        ]
    )


def _check_credential(settings: Settings) -> None:
    """Exit 77 (EXIT_REVOKED, which the provisioned unit does not restart) with the API's
    words when it refuses the runner's credential."""
    from ci_pool import defaults
    from ci_pool.exceptions import RunnerCutOff
    from ci_pool.worker.api_store import ApiRunnerStore

    try:
        me = ApiRunnerStore(settings).whoami()
    except RunnerCutOff as exc:
        err.print(Text.assemble(("error:", "red"), f" {exc}"))
        raise typer.Exit(defaults.EXIT_REVOKED) from None
    err.print(
        f"runner {me['name']}: reaching the store through the API at {settings.api_url}",
        soft_wrap=True,  # one line in the worker's log, however long the URL
    )


def _runner_name(settings: Settings, capability: str, given: str | None) -> str:
    """This worker's name, taken in the pool: ``--name`` or ``runner_id`` as given (exit 1
    with one line when a live worker elsewhere holds it), else the first free name of
    ``runner_name_pattern``."""
    import os

    import redis

    from ci_pool import defaults
    from ci_pool.broker.runners import RunnerRegistry, drain_key
    from ci_pool.core.runner_names import check_name, host_label, pattern_fields, render_name

    host, pid = socket.gethostname(), os.getpid()
    registry = RunnerRegistry(redis.Redis.from_url(settings.broker_url), settings.runner_ttl)
    fixed = given or settings.runner_id
    try:
        if fixed:
            names = [check_name(fixed)]
        else:
            count = (
                defaults.RUNNER_NAME_MAX_INDEX
                if "n" in pattern_fields(settings.runner_name_pattern)
                else 1
            )
            short = host_label(host)
            values = settings.runner_name_values
            names = [
                render_name(settings.runner_name_pattern, short, capability, n, values)
                for n in range(1, count + 1)
            ]
    except ValueError as exc:
        err.print(Text.assemble(("error:", "red"), f" {exc}"), soft_wrap=True)
        raise typer.Exit(2) from None
    for candidate in names:
        held = registry.claim(candidate, host, pid, take_over=bool(fixed))
        if held is None:
            registry.redis.delete(drain_key(candidate))  # a new process starts undrained
            return candidate
        if fixed:
            where, _, other = held.rpartition("|")
            err.print(
                Text.assemble(
                    ("error:", "red"),
                    f" runner name {candidate!r} is already live on {where} (pid {other}); "
                    "give this worker another name (--name or CI_POOL_RUNNER_ID), or stop "
                    "that one first",
                ),
                soft_wrap=True,
            )
            raise typer.Exit(1)
    err.print(
        Text.assemble(
            ("error:", "red"),
            f" every name of runner_name_pattern {settings.runner_name_pattern!r} is live; "
            "set runner_id or --name",
        ),
        soft_wrap=True,
    )
    raise typer.Exit(1)


def _reaper(pool: Pool) -> Reaper:
    """A reaper for this pool; removes leftover containers when Docker answers here."""
    from ci_pool.exceptions import CIPoolError
    from ci_pool.service.reaper import Reaper

    remove = None
    try:
        from ci_pool.worker.executors.docker import DockerExecutor

        remove = DockerExecutor.from_env().remove_leftovers
    except CIPoolError:
        pass

    from ci_pool.service.retention import sweep_expired_artifacts

    statuses = None
    if pool.settings.forges:
        from ci_pool.service.forge import StatusSender

        statuses = StatusSender(pool.settings, pool.store).sweep
    return Reaper(
        pool.store,
        pool.redis,
        pool.publish,
        resend_after=pool.settings.resend_after,
        unacked_grace=pool.settings.resend_unacked_after,
        remove_containers=remove,
        statuses=statuses,
        sync_payload_max_age=pool.settings.sync_payload_max_age,
        artifacts=lambda: sweep_expired_artifacts(pool),
        runner_ttl=pool.settings.runner_ttl,
        runner_users=pool.runner_users,
    )


def beat(
    once: Annotated[bool, typer.Option(help="One sweep, print what it did, exit.")] = False,
) -> None:
    """Run the reaper (lost runners' jobs re-queued, lost messages re-sent, pipelines
    advanced) and the schedules of registered repositories (see ci-pool repos)."""
    from ci_pool.cli import repos as cli_repos
    from ci_pool.service.pool import Pool
    from ci_pool.settings import get_settings

    pool = Pool(get_settings())
    reaper = _reaper(pool)
    schedules = cli_repos.schedules(pool)
    while True:
        done = reaper.sweep()
        cli_repos.tick(schedules, err)
        if (
            once
            or done.lost
            or done.resent
            or done.advanced
            or done.expired_artifacts
            or (done.restored_users)
        ):
            err.print(
                f"reaper: {len(done.lost)} lost ({', '.join(done.lost) or '-'}), "
                f"{len(done.requeued)} re-queued, {len(done.resent)} re-sent "
                f"({', '.join(done.resent) or '-'}), {len(done.advanced)} pipeline(s) advanced, "
                f"{done.statuses} commit status(es) sent, {done.sync_payloads} unused sync "
                f"payload(s) and {done.expired_artifacts} expired artifact(s) removed, "
                f"{len(done.restored_users)} runner Redis user(s) re-created "
                f"({', '.join(done.restored_users) or '-'})",
                soft_wrap=True,
            )
        if once:
            return
        time.sleep(pool.settings.reap_interval)


def metrics(
    serve_port: Annotated[
        int | None,
        typer.Option(
            "--serve",
            metavar="PORT",
            min=1,
            max=65535,
            help="Serve GET /metrics on this port until interrupted, instead of printing once.",
        ),
    ] = None,
    address: Annotated[
        str, typer.Option(help="Loopback address to serve on with --serve (no TLS, no auth).")
    ] = "127.0.0.1",
) -> None:
    """Pool metrics for Prometheus: queue depth, waits, durations, runners, broker."""
    from ci_pool.service import monitoring

    monitoring.metrics(serve_port, address)


def flower(
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default 5555).")] = None,
    address: Annotated[
        str | None,
        typer.Option(help="Listen address (default 127.0.0.1; others need TLS in front)."),
    ] = None,
    basic_auth: Annotated[
        str | None,
        typer.Option(
            "--basic-auth",
            metavar="USER:PASSWORD",
            help="Credentials; prefer CI_POOL_FLOWER_AUTH, a command line is visible to all.",
        ),
    ] = None,
) -> None:
    """Run Flower on the pool's broker: basic auth required, loopback by default."""
    from ci_pool.service import monitoring
    from ci_pool.settings import get_settings

    raise typer.Exit(monitoring.flower_command(get_settings(), port, address, basic_auth))
