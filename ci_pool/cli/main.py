"""The ci-pool command line (typer + rich). Commands are thin: job and pipeline commands
go through the HTTP API when CI_POOL_API_URL is set (with CI_POOL_API_TOKEN), else
straight to the local store and broker.

Exit codes: 0 ok; 1 the job failed (``wait`` exits with the job's own exit code);
2 bad usage or input; 3 infrastructure error (broker, store, Docker, git server);
124 the job timed out; 130 the job was cancelled.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import kombu.exceptions
import redis
import sqlalchemy.exc
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ci_pool.cli import api as cli_api
from ci_pool.cli import doctor as cli_doctor
from ci_pool.cli import pipelines as cli_pipelines
from ci_pool.cli import provision as cli_provision
from ci_pool.cli import repos as cli_repos
from ci_pool.cli.client import PoolClient, connect
from ci_pool.cli.jobview import show_reports
from ci_pool.core.capabilities import route
from ci_pool.core.specs import FINAL_STATES, WAIT_EXIT_CODES, JobState
from ci_pool.exceptions import CIPoolError, InputError
from ci_pool.service import monitoring
from ci_pool.service.pool import Pool
from ci_pool.service.reaper import Reaper
from ci_pool.service.views import job_dict as job_dict
from ci_pool.settings import get_settings
from ci_pool.worker.lifecycle import Limits

app = typer.Typer(
    name="ci-pool",
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Whole table rows for pipes; text from files and jobs printed as is (no markup, no
# :emoji: codes: ``file.yml:100:21`` is not "file.yml💯21"), styles given as Text.
out = Console(
    highlight=False, markup=False, emoji=False, width=None if sys.stdout.isatty() else 160
)
err = Console(stderr=True, highlight=False, markup=False, emoji=False)


def _pool() -> Pool:
    return Pool(get_settings())


def _client() -> PoolClient:
    """The API when CI_POOL_API_URL is set, else the local store and broker."""
    return connect(get_settings())


def _duration(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([smh]?)\s*", text)
    if not m:
        raise InputError(
            "use seconds or a number with s/m/h, e.g. 600, 90s, 10m, 2h", field="--timeout"
        )
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InputError(f"{pair!r} is not KEY=VALUE", field="--env")
        env[key] = value
    return env


_STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "error": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "rejected": "red",
    "queued": "cyan",
    "running": "blue",
}


@app.command()
def submit(
    repo: Annotated[str, typer.Option(help="Repository URL (https://, ssh://, git://).")],
    run: Annotated[list[str], typer.Option(help="Shell command(s); each --run is one step.")],
    ref: Annotated[str, typer.Option(help="Branch, tag or commit SHA.")] = "HEAD",
    capability: Annotated[str | None, typer.Option(help="Capability (queue) to run on.")] = None,
    label: Annotated[list[str] | None, typer.Option(help="Required runner label.")] = None,
    env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the job.")] = None,
    timeout: Annotated[str | None, typer.Option(help="Job timeout: 600, 90s, 10m, 2h.")] = None,
    name: Annotated[str, typer.Option(help="A name for the job.")] = "",
    secret: Annotated[
        list[str] | None, typer.Option(help="Capability secret to pass as an env variable.")
    ] = None,
    artifact: Annotated[
        list[str] | None, typer.Option(help="Glob of files to keep, relative to the workspace.")
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Image override (where the capability allows it).")
    ] = None,
    fetch_depth: Annotated[int, typer.Option(min=0, help="Commits of history; 0 = all.")] = 1,
    submodules: Annotated[bool, typer.Option(help="Check out submodules too.")] = False,
    lfs: Annotated[bool, typer.Option(help="Fetch Git LFS files.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
) -> None:
    """Submit one job; prints its id."""
    body = {
        "repo": repo,
        "ref": ref,
        "capability": capability,
        "labels": list(label or ()),
        "steps": [{"run": r, "name": f"run {i}"} for i, r in enumerate(run, 1)],
        "env": _env_pairs(env or []),
        "timeout": _duration(timeout) if timeout else None,
        "name": name,
        "secrets": list(secret or ()),
        "artifacts": list(artifact or ()),
        "image": image,
        "checkout": {"fetch_depth": fetch_depth, "submodules": submodules, "lfs": lfs},
    }
    job = _client().submit_job(body)
    if as_json:
        out.print_json(json.dumps(job))
    else:
        print(job["id"])


def _exit_code(job: dict[str, Any]) -> int:
    if job["state"] == JobState.FAILED.value:
        return int(job["exit_code"] or 1)
    return WAIT_EXIT_CODES.get(JobState(job["state"]), 3)


@app.command()
def wait(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    timeout: Annotated[str | None, typer.Option(help="Give up after this long (exit 3).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Block until the job ends; exit with its exit code (124 timed out, 130 cancelled)."""
    job = _client().wait(job_id, timeout=_duration(timeout) if timeout else None)
    if as_json:
        out.print_json(json.dumps(job))
    else:
        reason = f": {job['reason']}" if job["reason"] else ""
        err.print(f"job {job['id']} {job['state']}{reason}")
    if JobState(job["state"]) not in FINAL_STATES:
        raise typer.Exit(3)
    raise typer.Exit(_exit_code(job))


def _recorded(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``permissions`` (as scopes) and ``environment`` rows of a workflow job."""
    rows = []
    if data.get("permissions") is not None:
        granted = data["permissions"]
        text = ", ".join(f"{k}: {v}" for k, v in granted.items()) if granted else "none"
        rows.append(("scopes", escape(text.replace("*: ", "all: "))))
    if data.get("environment"):
        env = data["environment"]
        shown = env["name"] + (f" ({env['url']})" if env["url"] else "")
        rows.append(("deploys to", escape(shown)))
    return rows


@app.command()
def show(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A job's state, timings, runner and history, the annotations and step summaries
    (markdown) of its latest attempt; says why it waits when queued."""
    data = _client().job(job_id)
    if as_json:
        out.print_json(json.dumps(data))
        return
    style = _STATE_STYLE.get(data["state"], "white")
    out.print(
        Text.assemble(
            (f"job {data['id']}", "bold"),
            "  ",
            (data["state"], style),
            f"  exit {data['exit_code']}" if data["exit_code"] is not None else "",
        )
    )
    rows = [
        ("name", data["name"]),
        ("capability", f"{data['capability']} (queue {data['queue']})"),
        (
            "repo",
            f"{data['repo']} {data['ref']}"
            + (f" @ {data['commit_sha'][:12]}" if data["commit_sha"] else ""),
        ),
        ("runner", data["runner_id"] or "-"),
        ("attempt", f"{data['attempt']}/{data['max_attempts']}"),
        ("queued", data["queued_at"] or "-"),
        ("started", data["started_at"] or "-"),
        ("finished", data["finished_at"] or "-"),
        ("reason", data["reason"] or "-"),
    ]
    rows += _recorded(data)
    for key, value in rows:
        out.print(f"  {key:<11}{value}")
    if data["waiting"]:
        out.print(Text(f"  waiting    {data['waiting']}", style="yellow"))
    if data["artifacts"]:
        out.print("  artifacts")
        for a in data["artifacts"]:
            out.print(f"    {a['path']}  {a['size']} bytes  sha256 {a['sha256']}")
    out.print("  history")
    for e in data["events"]:
        out.print(
            f"    {e['at']}  #{e['attempt']}  {e['from'] or '-'} -> {e['to']}"
            + (f"  on {e['runner_id']}" if e["runner_id"] else "")
            + (f"  ({e['reason']})" if e["reason"] else "")
        )
    show_reports(out, data)


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream live.")] = False,
    attempt: Annotated[int | None, typer.Option(help="Attempt (default: latest).")] = None,
    timestamps: Annotated[
        bool, typer.Option(help="With -f: prefix each line with the time it was written.")
    ] = True,
) -> None:
    """Print a job's log (``-f`` follows it live, with timestamps, until the job ends)."""
    client = _client()
    if follow:
        for ts, line in client.follow(job_id):
            stamp = f"{ts[11:23]} " if timestamps and ts else ""
            print(f"{stamp}{line}", flush=True)
        return
    sys.stdout.write(client.log(job_id, attempt))


@app.command("artifacts")
def artifacts_cmd(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    dest: Annotated[Path, typer.Option(help="Directory to copy the artifacts into.")] = Path("."),
    attempt: Annotated[int | None, typer.Option(help="Attempt (default: latest).")] = None,
) -> None:
    """Download a job's artifacts (checked against their sha256)."""
    for path in _client().download_artifacts(job_id, dest, attempt):
        print(path)


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Cancel a job: at once if queued; a running job is stopped by its worker."""
    job = _client().cancel(job_id)
    print(f"job {job['id']} {'cancel requested' if job['state'] == 'running' else job['state']}")


@app.command()
def runners(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Workers with their state (online, busy, draining, unhealthy, lost), jobs and last
    heartbeat; an unhealthy runner says why and what fixes it."""
    rows = _client().runners()
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    table = Table("runner", "capability", "state", "host", "slots", "jobs", "last seen")
    now = datetime.now().timestamp()
    for r in rows:
        table.add_row(
            r.runner_id,
            r.capability,
            escape(f"unhealthy: {r.unhealthy}") if r.unhealthy else r.state,
            r.host,
            str(r.concurrency),
            ", ".join(r.jobs) or "-",
            f"{now - r.last_seen:.1f}s ago",
        )
    out.print(table)


@app.command()
def worker(
    capability: Annotated[str, typer.Option(help="Capability whose queue to consume.")],
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once.")] = 1,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    pool_impl: Annotated[
        str, typer.Option("--pool", help="Celery pool: prefork|threads|solo")
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
) -> None:
    """Run a Celery worker on one capability's queue.

    With --max-jobs / --idle-timeout / --max-lifetime it exits cleanly at the limit: it
    stops taking jobs, lets the running one finish, and exits 0 (disposable runners)."""
    settings = get_settings()
    cap = route(settings.capabilities, capability)
    if cap.mode == "docker":
        from ci_pool.worker.executors.docker import docker_available

        if not docker_available():
            err.print(
                Text.assemble(
                    ("warning:", "yellow"),
                    f" no Docker engine answers; jobs of {cap.name!r} will end in error "
                    "until one does",
                )
            )
    from ci_pool.broker.app import create_celery

    Pool(settings).store.init_schema()  # tables exist before any job is claimed
    capp = create_celery(settings)
    capp.conf.ci_pool_capability = cap.name
    capp.conf.worker_concurrency = concurrency
    capp.conf.ci_pool_limits = Limits(max_jobs, idle_timeout, max_lifetime)
    from ci_pool.service.forge import worker_notifier

    capp.conf.ci_pool_status_notifier = worker_notifier(settings)
    node = f"{cap.name}@{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    capp.worker_main(
        [
            "worker",
            "-Q",
            cap.queue,
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


@app.command()
def drain(
    runner_id: Annotated[str, typer.Argument(help="Runner id (see ci-pool runners).")],
) -> None:
    """Stop a runner taking new jobs; it finishes the running one, then exits."""
    print(_client().drain(runner_id))


@app.command()
def undrain(runner_id: Annotated[str, typer.Argument(help="Runner id.")]) -> None:
    """Cancel a drain that has not finished yet: the runner takes jobs again."""
    print(_client().undrain(runner_id))


@app.command()
def scale(
    capability: Annotated[str, typer.Argument(help="Capability (queue) to scale.")],
    slots: Annotated[int, typer.Argument(min=0, help="Jobs the capability runs at once.")],
) -> None:
    """Grow or shrink the worker pools of a capability to this many concurrent jobs."""
    for line in _client().scale(capability, slots):
        print(line)


STATUS_COLUMNS: tuple[str, ...] = ("capability", "queued", "oldest wait", "blocked", "running")
STATUS_COLUMNS += ("workers", "slots", "done 1h", "failed 1h", "error 1h", "p50", "p95")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Per capability: queue depth, oldest wait, running jobs, workers, last hour's jobs.

    Exits 3 when the broker does not answer (worker counts are then unknown)."""
    rows = _client().status()
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
    else:
        table = Table(*STATUS_COLUMNS)

        def fmt(v: object, unit: str = "") -> str:
            return "-" if v is None else f"{v}{unit}"

        for r in rows:
            table.add_row(
                r.capability,
                str(r.queued),
                fmt(r.oldest_wait_s, "s"),
                str(r.blocked),
                str(r.running),
                fmt(r.workers),
                fmt(r.slots),
                str(r.finished_1h),
                str(r.failed_1h),
                str(r.errors_1h),
                fmt(r.p50_s, "s"),
                fmt(r.p95_s, "s"),
            )
        out.print(table)
    if any(r.workers is None for r in rows):
        err.print(
            "the broker did not answer: worker counts are unknown; check CI_POOL_BROKER_URL "
            "and that redis-server runs"
        )
        raise typer.Exit(3)


@app.command()
def explain(job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Why a job is not running yet (or how it ended), in plain words."""
    print(_client().explain(job_id))


def _reaper(pool: Pool) -> Reaper:
    """A reaper for this pool; removes leftover containers when Docker answers here."""
    remove = None
    try:
        from ci_pool.worker.executors.docker import DockerExecutor

        remove = DockerExecutor.from_env().remove_leftovers
    except CIPoolError:
        pass

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
    )


@app.command()
def beat(
    once: Annotated[bool, typer.Option(help="One sweep, print what it did, exit.")] = False,
) -> None:
    """Run the reaper (lost runners' jobs re-queued, lost messages re-sent, pipelines
    advanced) and the schedules of registered repositories (``ci-pool repos``)."""
    pool = _pool()
    reaper = _reaper(pool)
    schedules = cli_repos.schedules(pool)
    while True:
        done = reaper.sweep()
        cli_repos.tick(schedules, err)
        if once or done.lost or done.resent or done.advanced:
            err.print(
                f"reaper: {len(done.lost)} lost ({', '.join(done.lost) or '-'}), "
                f"{len(done.requeued)} re-queued, {len(done.resent)} re-sent "
                f"({', '.join(done.resent) or '-'}), {len(done.advanced)} pipeline(s) advanced, "
                f"{done.statuses} commit status(es) sent",
                soft_wrap=True,
            )
        if once:
            return
        time.sleep(pool.settings.reap_interval)


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Leave the demo repo and store in place.")] = True,
) -> None:
    """Run the example job end to end on an embedded Redis, git daemon and worker."""
    from ci_pool.cli.demo import run_demo

    raise typer.Exit(run_demo(out))


app.command()(cli_pipelines.run)
app.command()(monitoring.metrics)
app.command()(monitoring.flower)
app.command()(cli_pipelines.validate)
app.command()(cli_pipelines.retry)
app.add_typer(cli_pipelines.pipeline_app, name="pipeline")
app.add_typer(cli_api.token_app, name="token")
app.add_typer(cli_provision.provision_app, name="provision")
app.add_typer(cli_repos.repos_app, name="repos")
app.command("api")(cli_api.api)
app.command()(cli_doctor.doctor)
app.add_typer(cli_doctor.images_app, name="images")
app.add_typer(cli_doctor.db_app, name="db")


def _error(message: str) -> None:
    err.print(Text.assemble(("error:", "red"), f" {message}"), soft_wrap=True)


def main() -> None:
    """Console entry point: errors become one line and a meaningful exit code."""
    try:
        app()
    except CIPoolError as exc:
        _error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except (redis.RedisError, kombu.exceptions.OperationalError) as exc:
        _error(
            f"the broker is unreachable ({exc}); check CI_POOL_BROKER_URL and that "
            "redis-server runs"
        )
        sys.exit(3)
    except sqlalchemy.exc.OperationalError as exc:
        _error(f"the store is unreachable ({exc.orig}); check CI_POOL_STORE_URL")
        sys.exit(3)


if __name__ == "__main__":
    main()
