"""``ci-pool up``: a whole pool on this machine in the foreground (registered in
ci_pool.cli.main): Redis, one worker per capability that can run here, the API on
loopback, beat, Flower on request, and a live panel; Ctrl-C stops everything."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ci_pool import defaults
from ci_pool.exceptions import InfraError

if TYPE_CHECKING:
    from ci_pool.embedded import RedisServer
    from ci_pool.home import UpRecord
    from ci_pool.service.pool import Pool
    from ci_pool.service.supervisor import Child, Supervisor
    from ci_pool.service.views import QueueStatus, RunnerStatus
    from ci_pool.settings import Settings
    from ci_pool.store import Job

out = Console(highlight=False, markup=False, emoji=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, markup=False, emoji=False)

#: Scopes of the admin token ``up`` makes for its API.
UP_SCOPES = ("submit", "read", "cancel", "admin")


def up(
    flower: Annotated[
        bool, typer.Option("--flower", help="Also run Flower on 127.0.0.1 (basic auth).")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs each worker runs at once.")] = 1,
    api_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="API port (default: a free one).")
    ] = None,
    local_repos: Annotated[
        bool,
        typer.Option(help="Accept local paths and file:// as repositories (this user's pool)."),
    ] = True,
) -> None:
    """Run a whole pool on this machine in the foreground until Ctrl-C.

    Redis (the embedded redis-server, or CI_POOL_BROKER_URL), one worker per capability
    that can run here (host mode, or its image is present), the API on 127.0.0.1 with an
    admin token, and beat. Every ci-pool command then uses it from any directory. Exits 1
    when another up serves the home, 3 when a part of the pool cannot start."""
    from ci_pool.home import read_up_record
    from ci_pool.service.supervisor import HomeLock
    from ci_pool.settings import get_settings
    from ci_pool.store.files import private_dir

    settings = get_settings()
    home = settings.home.resolve()
    private_dir(home)
    lock = HomeLock(home)
    if not lock.acquire():
        rec = read_up_record(home)
        where = (
            f": pid {rec.pid}, broker {rec.broker_url}, API {rec.api_url}, token in "
            f"{rec.token_file}"
            if rec
            else " (it is starting)"
        )
        err.print(f"error: ci-pool up already runs for the home {home}{where}", soft_wrap=True)
        raise typer.Exit(1)
    _take_ctrl_c()
    try:
        _serve(settings, home, flower, concurrency, api_port, local_repos)
    finally:
        lock.release()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _take_ctrl_c() -> None:
    """Ctrl-C (SIGINT) and SIGTERM stop up, whatever up inherited: a shell starts a
    background command with SIGINT ignored, and an ignored or blocked signal stays so
    across exec, which would leave ``kill -INT`` without effect."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _broker(settings: Settings, home: Path) -> tuple[str, RedisServer | None]:
    """The broker URL up uses: the configured one when set, else an embedded redis-server."""
    import redis

    from ci_pool.embedded import RedisServer
    from ci_pool.settings import Settings

    if "CI_POOL_BROKER_URL" in os.environ or (
        settings.broker_url != Settings.model_fields["broker_url"].default
    ):
        try:
            redis.Redis.from_url(settings.broker_url, socket_timeout=5).ping()
        except redis.RedisError as exc:
            raise InfraError(f"the broker {settings.broker_url} does not answer: {exc}") from None
        return settings.broker_url, None
    server = RedisServer.start(home / "redis", appendonly=True)
    return server.url, server


def _token(pool: Pool, home: Path) -> tuple[Path, str | None]:
    """The admin token file (0600) and the new token to print once; None when the token
    kept in the home still works."""
    from ci_pool.store import tokens

    path = home / defaults.UP_TOKEN
    try:
        kept = path.read_text().strip()
    except OSError:
        kept = ""
    if kept and (row := tokens.verify(pool.store, kept)) is not None and row.is_active():
        return path, None
    plaintext, _ = tokens.create_token(pool.store, f"up-{int(time.time())}", UP_SCOPES)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(plaintext + "\n")
    return path, plaintext


def _serve(
    settings: Settings,
    home: Path,
    flower: bool,
    concurrency: int,
    api_port: int | None,
    local_repos: bool,
) -> None:
    from ci_pool.config_file import config_file_in_use
    from ci_pool.embedded import free_port
    from ci_pool.home import UpRecord
    from ci_pool.service.pool import Pool
    from ci_pool.service.supervisor import Supervisor, runnable
    from ci_pool.tls import server_files

    url, redis_server = _broker(settings, home)
    record: UpRecord | None = None
    sup: Supervisor | None = None
    try:
        settings = settings.model_copy(update={"broker_url": url})
        pool = Pool(settings)
        token_file, new_token = _token(pool, home)
        port = api_port or free_port()
        # The API child reads api_tls_cert/api_tls_key from the same settings.
        scheme = "https" if server_files(settings.api_tls_cert, settings.api_tls_key) else "http"
        record = UpRecord(
            pid=os.getpid(),
            broker_url=url,
            api_url=f"{scheme}://127.0.0.1:{port}",
            token_file=str(token_file),
            allow_local_repos=local_repos,
            started_at=time.time(),
        )
        record.write(home)
        env = {**os.environ, "CI_POOL_HOME": str(home), "CI_POOL_BROKER_URL": url}
        config = config_file_in_use()
        if config is not None:
            env["CI_POOL_CONFIG"] = str(config.resolve())
        able, skipped = runnable(settings)
        for s in skipped:
            err.print(f"skipped {s.capability}: {s.why}; fix: {s.fix}", soft_wrap=True)
        sup = Supervisor(home / "logs", env)
        sup.start("api", "api", "--host", "127.0.0.1", "--port", str(port))
        sup.start("beat", "beat")
        workers = {
            cap: sup.start(
                f"worker-{cap}", "worker", "--capability", cap, "--concurrency", str(concurrency)
            )
            for cap in able
        }
        if flower:
            _start_flower(sup, settings)
        _wait_ready(pool, sup, port, workers)
        _announce(record, home, new_token, able)
        _panel(pool, sup)
    except KeyboardInterrupt:
        pass
    finally:
        err.print("stopping the pool...")
        if sup is not None:
            sup.stop(settings.stop_grace + 5)
        if redis_server is not None:
            redis_server.stop()
        if record is not None:
            (home / defaults.UP_RECORD).unlink(missing_ok=True)
        err.print("ci-pool up stopped; nothing of it runs any more")


def _start_flower(sup: Supervisor, settings: Settings) -> None:
    extra: dict[str, str] = {}
    if settings.flower_auth is None:
        password = secrets.token_urlsafe(12)
        extra["CI_POOL_FLOWER_AUTH"] = f"up:{password}"
        out.print(f"Flower: user up, password {password}")
    sup.start("flower", "flower", env=extra)
    out.print(f"Flower on http://{settings.flower_address}:{settings.flower_port}/")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_ready(pool: Pool, sup: Supervisor, port: int, workers: dict[str, Child]) -> None:
    """Until the API answers and every worker registered; a child that exits or a slow
    start is an InfraError naming its log."""
    deadline = time.monotonic() + defaults.UP_START_TIMEOUT
    pending = dict(workers)
    api_up = False
    while True:
        for child in sup.exited():
            raise InfraError(
                f"{child.name} exited at start with code {child.proc.returncode}; see {child.log}"
            )
        api_up = api_up or _answers(port)
        for cap, child in list(pending.items()):
            if any(r.pid == child.proc.pid for r in pool.runners(cap)):
                del pending[cap]
        if api_up and not pending:
            return
        if time.monotonic() > deadline:
            late = [c.name for c in pending.values()] + ([] if api_up else ["api"])
            logs = ", ".join(str(sup.logs / f"{n}.log") for n in late)
            raise InfraError(f"{', '.join(late)} did not start in time; see {logs}")
        time.sleep(0.2)


def _announce(record: UpRecord, home: Path, new_token: str | None, able: list[str]) -> None:
    out.print(Text.assemble(("ci-pool up", "bold"), f": home {home}"))
    out.print(f"  broker  {record.broker_url}")
    out.print(f"  API     {record.api_url}")
    if new_token:
        out.print(f"  token   {new_token}  (admin; shown once, kept in {record.token_file})")
    else:
        out.print(f"  token   kept in {record.token_file} (admin)")
    out.print(f"  workers {', '.join(able) or 'none'}")
    out.print(f"  logs    {home / 'logs'}")
    out.print("ready: every ci-pool command uses this pool, from any directory; Ctrl-C stops it")


@dataclass(frozen=True)
class Snapshot:
    """What the panel shows: recent jobs, runners, queues, and why the broker is down."""

    jobs: list[Job]
    runners: list[RunnerStatus] = field(default_factory=list)
    queues: list[QueueStatus] = field(default_factory=list)
    broker: str | None = None


def _snapshot(pool: Pool) -> Snapshot:
    """What the panel shows; the broker being down is shown, never raised."""
    jobs = pool.store.list_jobs(limit=8)
    try:
        runners, queues = pool.runner_statuses(), pool.status()
    except Exception as exc:
        return Snapshot(jobs, broker=str(exc))
    return Snapshot(jobs, runners, queues)


def _value(state: object) -> str:
    return str(getattr(state, "value", state))


def _render(snap: Snapshot, sup: Supervisor) -> Group:
    workers = Table("runner", "capability", "state", "jobs", title="workers", title_justify="left")
    for r in snap.runners:
        state = f"unhealthy: {r.unhealthy}" if r.unhealthy else _value(r.state)
        workers.add_row(r.runner_id, r.capability, state, ", ".join(r.jobs) or "-")
    queues = Table("capability", "queued", "running", "workers", title="queues",
                   title_justify="left")  # fmt: skip
    for q in snap.queues:
        if q.queued or q.running or q.workers:
            queues.add_row(q.capability, str(q.queued), str(q.running), str(q.workers or 0))
    jobs = Table("job", "capability", "state", "runner", title="recent jobs", title_justify="left")
    for j in snap.jobs:
        jobs.add_row(j.id, j.capability, _value(j.state), j.runner_id or "-")
    parts: list[Any] = [workers, queues, jobs]
    if snap.broker:
        parts.append(Text(f"the broker does not answer: {snap.broker}", style="red"))
    for child in sup.exited():
        parts.append(Text(f"{child.name} exited ({child.proc.returncode}); see {child.log}",
                          style="red"))  # fmt: skip
    parts.append(Text("Ctrl-C stops the pool", style="dim"))
    return Group(*parts)


def _panel(pool: Pool, sup: Supervisor) -> None:
    """A live panel on a terminal; else one line per change (jobs, runners, exits)."""
    if sys.stdout.isatty():
        from rich.live import Live

        with Live(_render(_snapshot(pool), sup), console=out, refresh_per_second=2) as live:
            while True:
                time.sleep(defaults.UP_REFRESH)
                live.update(_render(_snapshot(pool), sup))
    seen: set[str] = set()
    while True:
        snap = _snapshot(pool)
        lines = [f"job {j.id} {_value(j.state)} ({j.capability})" for j in reversed(snap.jobs)]
        lines += [
            f"runner {r.runner_id} "
            + (f"unhealthy: {r.unhealthy}" if r.unhealthy else _value(r.state))
            for r in snap.runners
        ]
        lines += [f"{c.name} exited ({c.proc.returncode}); see {c.log}" for c in sup.exited()]
        if snap.broker:
            lines.append(f"the broker does not answer: {snap.broker}")
        for line in lines:
            if line not in seen:
                print(time.strftime("%H:%M:%S ") + line, flush=True)
        seen = set(lines)
        time.sleep(defaults.UP_REFRESH)
