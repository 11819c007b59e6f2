"""The ci-pool command line (typer + rich). Commands are thin: job and pipeline commands
go through the HTTP API when CI_POOL_API_URL is set (with CI_POOL_API_TOKEN), else
straight to the local store and broker.

Exit codes: 0 ok; 1 the job failed (wait exits with the job's own exit code);
2 bad usage or input; 3 infrastructure error (broker, store, Docker, git server);
124 the job timed out; 130 the job was cancelled.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

# Only typer, rich and light modules at import time: `--help` and the job commands start
# without the API, provisioning, Celery or Docker. Each command imports what it uses.
from ci_pool.cli import api as cli_api
from ci_pool.cli import doctor as cli_doctor
from ci_pool.cli import pipelines as cli_pipelines
from ci_pool.cli import processes as cli_processes
from ci_pool.cli import provision as cli_provision
from ci_pool.cli import repos as cli_repos
from ci_pool.cli import runner as cli_runner  # noqa: F401  (adds exec, exec-log to the group)
from ci_pool.cli import runners as cli_runners
from ci_pool.cli import up as cli_up
from ci_pool.cli.coercion import plain_command
from ci_pool.cli.jobview import recorded_rows, show_reports
from ci_pool.cli.loopback import UpClient, quick_repo, up_client
from ci_pool.cli.options import RunnerOption, SyncOption, WorktreeOption, table_console
from ci_pool.cli.views import any_json, brief_json
from ci_pool.exceptions import CIPoolError, InputError

if TYPE_CHECKING:
    from ci_pool.cli import views
    from ci_pool.cli.client import PoolClient
    from ci_pool.service import views as service_views
    from ci_pool.service.job_views import JobView

app = typer.Typer(
    name="ci-pool",
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Styles given as Text (the console reads no markup).
out = table_console()
err = Console(stderr=True, highlight=False, markup=False, emoji=False)


def _client() -> PoolClient:
    """The API when CI_POOL_API_URL is set, else the local store and broker."""
    from ci_pool.cli.client import connect
    from ci_pool.settings import get_settings

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
    repo: Annotated[
        str,
        typer.Option(help="Repository URL: https://, http://, ssh://, git:// or user@host:path."),
    ],
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
    sync: SyncOption = None,
    worktree: WorktreeOption = Path(),
    runner: RunnerOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
) -> None:
    """Submit one job; prints its id."""
    checkout: dict[str, object] = {"fetch_depth": fetch_depth, "submodules": submodules}
    checkout["lfs"] = lfs
    quick: UpClient | None = None
    pool: PoolClient | None = None
    if sync is not None:
        from ci_pool.cli.worktree import send
        from ci_pool.settings import get_settings

        pool = _client()
        ref, source = send(pool, sync, worktree, repo, ref, get_settings().sync_max_bytes)
        checkout["sync"] = source.model_dump(mode="json")
    else:
        quick = up_client() if quick_repo(repo) else None
    body: dict[str, object] = {
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
        "checkout": checkout,
    }
    if runner is not None:
        body["runner"] = runner
    if quick is not None:
        # up's API checks the body as JobCreate, with the same messages and fields.
        job: views.JobView | JobView = quick.submit_job(body)
    else:
        from ci_pool.core.submissions import job_create

        job = (pool or _client()).submit_job(job_create(body))
    if as_json:
        out.print_json(json.dumps(brief_json(job)))
    else:
        print(job.id)


def _exit_code(job: JobView) -> int:
    from ci_pool.core.specs import WAIT_EXIT_CODES, JobState

    if job.state == JobState.FAILED.value:
        return int(job.exit_code or 1)
    return WAIT_EXIT_CODES.get(JobState(job.state), 3)


@app.command()
def wait(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    timeout: Annotated[str | None, typer.Option(help="Give up after this long (exit 3).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Block until the job ends; exit with its exit code (124 timed out, 130 cancelled).

    With --timeout it exits 3 when the job has not ended by then, saying its state and
    why it has not started or finished."""
    from ci_pool.core.specs import FINAL_STATES, JobState

    client = _client()
    seconds = _duration(timeout) if timeout else None
    job = client.wait(job_id, timeout=seconds)
    final = JobState(job.state) in FINAL_STATES
    if as_json:
        out.print_json(json.dumps(brief_json(job)))
    elif final:
        reason = f": {job.reason}" if job.reason else ""
        err.print(f"job {job.id} {job.state}{reason}")
    if not final:
        err.print(
            f"timed out after {seconds} s waiting for job {job.id}, still {job.state}; "
            + client.explain(job.id),
            soft_wrap=True,
        )
        raise typer.Exit(3)
    raise typer.Exit(_exit_code(job))


@app.command()
def show(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """A job's state, timings, runner and history.

    Also the annotations and step summaries (markdown) of its latest attempt, and why it
    waits when queued."""
    job = (up_client() or _client()).job(job_id)
    if as_json:
        out.print_json(json.dumps(any_json(job)))
        return
    style = _STATE_STYLE.get(job.state, "white")
    out.print(
        Text.assemble(
            (f"job {job.id}", "bold"),
            "  ",
            (job.state, style),
            f"  exit {job.exit_code}" if job.exit_code is not None else "",
        )
    )
    rows = [
        ("name", job.name),
        ("capability", f"{job.capability} (queue {job.queue})"),
        (
            "repo",
            f"{job.repo} {job.ref}" + (f" @ {job.commit_sha[:12]}" if job.commit_sha else ""),
        ),
        ("runner", job.runner_id or "-"),
        *([("runs on", f"runners matching {job.runner!r}")] if job.runner else []),
        ("attempt", f"{job.attempt}/{job.max_attempts}"),
        ("queued", job.queued_at or "-"),
        ("started", job.started_at or "-"),
        ("finished", job.finished_at or "-"),
        ("reason", job.reason or "-"),
    ]
    rows += recorded_rows(job)
    for key, value in rows:
        out.print(f"  {key:<11}{value}")
    if job.waiting:
        out.print(Text(f"  waiting    {job.waiting}", style="yellow"))
    if job.artifacts:
        out.print("  artifacts")
        for a in job.artifacts:
            out.print(f"    {a.path}  {a.size} bytes  sha256 {a.sha256}")
    if job.expired_artifacts:
        out.print("  expired artifacts (removed after their retention; nothing to download)")
        for e in job.expired_artifacts:
            what = e.name or "the job's artifacts"
            out.print(f"    {what}  attempt {e.attempt}  expired {e.expired_at}")
    out.print("  history")
    for ev in job.events or ():
        out.print(
            f"    {ev.at}  #{ev.attempt}  {ev.from_state or '-'} -> {ev.to}"
            + (f"  on {ev.runner_id}" if ev.runner_id else "")
            + (f"  ({ev.reason})" if ev.reason else "")
        )
    show_reports(out, job)


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream live.")] = False,
    attempt: Annotated[int | None, typer.Option(help="Attempt (default: latest).")] = None,
    timestamps: Annotated[
        bool, typer.Option(help="With -f: prefix each line with the time it was written.")
    ] = True,
) -> None:
    """Print a job's log (-f follows it live, with timestamps, until the job ends)."""
    client = up_client() or _client()
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
    job = (up_client() or _client()).cancel(job_id)
    print(f"job {job.id} {'cancel requested' if job.state == 'running' else job.state}")


# Registered here to keep the order of `ci-pool --help`.
for command in (cli_runners.runners, cli_runners.drain, cli_runners.undrain, cli_runners.scale):
    app.command()(command)


STATUS_COLUMNS: tuple[str, ...] = ("capability", "queued", "oldest wait", "blocked", "running")
STATUS_COLUMNS += ("workers", "slots", "done 1h", "failed 1h", "error 1h", "p50", "p95")


def _where(quick: UpClient | None) -> str:
    """The pool ``status`` describes: its API in remote mode, else the home."""
    if quick is not None:
        return f"home {quick.home.resolve()}"
    from ci_pool.settings import get_settings

    settings = get_settings()
    if settings.api_url:
        return f"api {settings.api_url}"
    return f"home {settings.home.resolve()}"


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Per capability: queue depth, oldest wait, running jobs, workers, last hour's jobs;
    then the home (or the API) they come from.

    Exits 3 when the broker does not answer (worker counts are then unknown)."""
    quick = up_client()
    rows: list[views.QueueStatus] | list[service_views.QueueStatus]
    rows = quick.status() if quick is not None else _client().status()
    if as_json:
        out.print_json(json.dumps([any_json(r) for r in rows]))
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
        out.print(Text(_where(quick), style="dim"))
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


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Leave the demo repo and store in place.")] = True,
) -> None:
    """Run the example job end to end on an embedded Redis, git daemon and worker."""
    from ci_pool.cli.demo import run_demo

    raise typer.Exit(run_demo(out))


# Commands and sub-apps of other modules. A module registered here keeps its module-level
# imports to typer, rich, the standard library and light ci_pool modules (exceptions,
# defaults); what it needs from the store, broker, API or Docker it imports inside its
# commands (tests/unit/cli/test_startup.py checks it).
app.command()(cli_pipelines.run)
app.command()(cli_up.up)
app.command()(cli_processes.worker)
app.command()(cli_processes.beat)
app.command()(cli_processes.metrics)
app.command()(cli_processes.flower)
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
app.add_typer(cli_runners.runner_app, name="runner")


def _error(message: str) -> None:
    err.print(Text.assemble(("error:", "red"), f" {message}"), soft_wrap=True)


def main() -> None:
    """Console entry point: errors become one line and a meaningful exit code."""
    try:
        plain_command(app)()
    except CIPoolError as exc:
        _error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        message = _unreachable(exc)
        if message is None:
            raise
        _error(message)
        sys.exit(3)


def _unreachable(exc: Exception) -> str | None:
    """What to say when ``exc`` means the broker or the store does not answer, else None.

    Only the client libraries a command has imported can have raised, so the check never
    imports one."""
    broker_errors: list[type[BaseException]] = []
    if "redis" in sys.modules:
        import redis

        broker_errors.append(redis.RedisError)
    if "kombu" in sys.modules:
        import kombu.exceptions

        broker_errors.append(kombu.exceptions.OperationalError)
    if isinstance(exc, tuple(broker_errors)):
        return (
            f"the broker is unreachable ({exc}); check CI_POOL_BROKER_URL and that "
            "redis-server runs"
        )
    if "sqlalchemy" in sys.modules:
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.OperationalError):
            return f"the store is unreachable ({exc.orig}); check CI_POOL_STORE_URL"
    return None


if __name__ == "__main__":
    main()
