"""``ci-pool run``, ``validate``, ``pipeline show|cancel`` and ``retry``: workflow pipelines
from the command line, with live progress."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ci_pool.exceptions import InputError
from ci_pool.jobs import FINAL_STATES, JobState
from ci_pool.pool import Pool
from ci_pool.settings import get_settings
from ci_pool.store import Job
from ci_pool.store.models import Pipeline as PipelineRow
from ci_pool.workflow import validate_workflow

pipeline_app = typer.Typer(help="Inspect and cancel pipelines.", no_args_is_help=True)
# Scripts and pipes get whole table rows, not a squeeze to 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False)

_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "error": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "skipped": "dim",
    "queued": "cyan",
    "running": "blue",
    "blocked": "dim",
    "rejected": "red",
}
#: Exit code of ``run`` per pipeline state.
PIPELINE_EXIT = {"succeeded": 0, "failed": 1, "cancelled": 130, "rejected": 2}


def _read(file: Path) -> str:
    try:
        return file.read_text()
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror}", field="FILE") from None


def _elapsed(job: Job) -> str:
    if not job.started_at:
        return ""
    end = job.finished_at or datetime.now(UTC)
    return f"{(end - job.started_at).total_seconds():.1f}s"


def pipeline_dict(row: PipelineRow, jobs: list[Job]) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "file": row.file,
        "state": row.state,
        "repo": row.repo,
        "ref": row.ref,
        "commit_sha": row.commit_sha,
        "created_at": row.created_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "jobs": [
            {
                "id": j.id,
                "key": j.key,
                "state": j.state,
                "capability": j.capability,
                "needs": j.needs,
                "runner_id": j.runner_id,
                "exit_code": j.exit_code,
                "reason": j.reason,
                "attempt": j.attempt,
                "outputs": j.outputs,
                "started_at": j.started_at.isoformat() if j.started_at else None,
                "finished_at": j.finished_at.isoformat() if j.finished_at else None,
            }
            for j in jobs
        ],
    }


def _table(pool: Pool, row: PipelineRow, jobs: list[Job]) -> Group:
    table = Table(title=f"pipeline {row.id} {row.name} [{row.state}]", title_justify="left")
    for col in ("job", "state", "capability", "runner", "elapsed", "note"):
        table.add_column(col)
    tails = []
    for j in jobs:
        style = _STYLE.get(j.state, "white")
        note = j.reason or ""
        if j.state == JobState.QUEUED.value:
            note = pool.why_waiting(j) or ""
        table.add_row(
            j.key or j.id,
            Text(j.state, style=style),
            j.capability,
            j.runner_id or "",
            _elapsed(j),
            note,
        )
        if j.state == JobState.RUNNING.value:
            last = pool.store.read_log(j.id).splitlines()[-3:]
            tails.append(Text(f"{j.key}:", style="bold"))
            tails.extend(Text("  " + line, style="dim") for line in last)
    return Group(table, *tails)


def follow_pipeline(pool: Pool, pipeline_id: str, console: Console) -> PipelineRow:
    """Show progress until the pipeline ends: a live table on a terminal, else one line
    per job state change."""
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                row, jobs = pool.pipeline(pipeline_id)
                live.update(_table(pool, row, jobs))
                if row.state != "running":
                    return row
                time.sleep(0.25)
    seen: dict[str, str] = {}
    while True:
        row, jobs = pool.pipeline(pipeline_id)
        for j in jobs:
            if seen.get(j.id) != j.state:
                seen[j.id] = j.state
                extra = f" on {j.runner_id}" if j.state == "running" and j.runner_id else ""
                why = f" ({j.reason})" if j.reason and JobState(j.state) in FINAL_STATES else ""
                console.print(f"{j.key}: {j.state}{extra}{why}", soft_wrap=True)
        if row.state != "running":
            console.print(f"pipeline {row.id} {row.state}")
            return row
        time.sleep(0.25)


def run(
    file: Annotated[Path, typer.Argument(help="Workflow file (.github/workflows/*.yml).")],
    repo: Annotated[str, typer.Option(help="Repository URL.")],
    ref: Annotated[str, typer.Option(help="Branch, tag or commit SHA.")] = "HEAD",
    event: Annotated[str, typer.Option(help="github.event_name for if: conditions.")] = "push",
    detach: Annotated[bool, typer.Option(help="Print the pipeline id and return.")] = False,
) -> None:
    """Submit a workflow as a pipeline, show live progress, exit with its result."""
    pool = Pool(get_settings())
    row = pool.submit_pipeline(_read(file), str(file), repo, ref, event)
    if detach:
        print(row.id)
        return
    err.print(f"pipeline {row.id}: {len(pool.store.pipeline_jobs(row.id))} job(s)")
    final = follow_pipeline(pool, row.id, out)
    raise typer.Exit(PIPELINE_EXIT.get(final.state, 3))


def validate(
    files: Annotated[list[Path], typer.Argument(help="Workflow files to check.")],
) -> None:
    """Check workflow files without running them; every error is listed (exit 0 or 1)."""
    settings = get_settings()
    count = 0
    for file in files:
        for error in validate_workflow(_read(file), str(file), settings.capabilities):
            count += 1
            err.print(str(error), soft_wrap=True, markup=False)
    if count:
        err.print(f"{count} error(s) in {len(files)} file(s)")
        raise typer.Exit(1)
    err.print(f"{len(files)} file(s) valid")


@pipeline_app.command("show")
def pipeline_show(
    pipeline_id: Annotated[str, typer.Argument(help="Pipeline id.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A pipeline's jobs, their states, runners and results."""
    pool = Pool(get_settings())
    row, jobs = pool.pipeline(pipeline_id)
    if as_json:
        out.print_json(json.dumps(pipeline_dict(row, jobs)))
    else:
        out.print(_table(pool, row, jobs))


@pipeline_app.command("cancel")
def pipeline_cancel(pipeline_id: Annotated[str, typer.Argument(help="Pipeline id.")]) -> None:
    """Cancel every job of the pipeline that has not ended."""
    row = Pool(get_settings()).cancel_pipeline(pipeline_id)
    print(f"pipeline {row.id} {row.state}")


def retry(
    pipeline_id: Annotated[str, typer.Argument(help="Pipeline id (or one of its job ids).")],
    detach: Annotated[bool, typer.Option(help="Do not follow the re-run.")] = False,
) -> None:
    """Re-run the failed, cancelled and skipped jobs of a pipeline; passed jobs are kept."""
    pool = Pool(get_settings())
    try:
        pool.store.get_pipeline(pipeline_id)
    except Exception:  # a job id: retry its pipeline
        job = pool.get(pipeline_id)
        if not job.pipeline_id:
            raise InputError(f"job {job.id} is not part of a pipeline", field="ID") from None
        pipeline_id = job.pipeline_id
    again = pool.retry_pipeline(pipeline_id)
    err.print(f"pipeline {pipeline_id}: re-running {len(again)} job(s)")
    if not again or detach:
        return
    final = follow_pipeline(pool, pipeline_id, out)
    raise typer.Exit(PIPELINE_EXIT.get(final.state, 3))
