"""``ci-pool run``, ``validate``, ``pipeline show|cancel`` and ``retry``: workflow pipelines
from the command line, with live progress."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ci_pool.cli.options import RunnerOption, SyncOption, WorktreeOption, table_console
from ci_pool.defaults import MAX_WORKFLOW_BYTES
from ci_pool.exceptions import InputError, WorkflowError

if TYPE_CHECKING:
    from ci_pool.cli.client import PoolClient
    from ci_pool.service.job_views import PipelineJobView, PipelineView

pipeline_app = typer.Typer(help="Inspect and cancel pipelines.", no_args_is_help=True)
out = table_console()
err = Console(stderr=True, highlight=False, markup=False, emoji=False)

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
    """A workflow file's text, refused past ``MAX_WORKFLOW_BYTES`` or when not UTF-8."""
    try:
        with file.open("rb") as fh:
            data = fh.read(MAX_WORKFLOW_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror}", field="FILE") from None
    if len(data) > MAX_WORKFLOW_BYTES:
        raise WorkflowError(
            f"the file is over {MAX_WORKFLOW_BYTES} bytes, the limit for a workflow",
            file=str(file),
            line=1,
            column=1,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise WorkflowError(
            "not UTF-8 text; save the file as UTF-8", file=str(file), line=line, column=column
        ) from None


def _client() -> PoolClient:
    """The API when CI_POOL_API_URL is set, else the local store and broker."""
    from ci_pool.cli.client import connect
    from ci_pool.settings import get_settings

    return connect(get_settings())


def _elapsed(job: PipelineJobView) -> str:
    if not job.started_at:
        return ""
    started = datetime.fromisoformat(job.started_at)
    end = datetime.fromisoformat(job.finished_at) if job.finished_at else datetime.now(UTC)
    return f"{(end - started).total_seconds():.1f}s"


def _table(client: PoolClient, view: PipelineView) -> Group:
    from ci_pool.core.specs import JobState

    group = view.concurrency
    table = Table(
        # Names come from the workflow file: shown as written, never read as markup.
        title=str(
            f"pipeline {view.id} {view.run_name or view.name} [{view.state}]"
            + (f" concurrency group {group.name}" if group else "")
        ),
        title_justify="left",
    )
    for col in ("job", "state", "capability", "runner", "elapsed", "note"):
        table.add_column(col)
    tails = []
    for j in view.jobs:
        style = _STYLE.get(j.state, "white")
        note = j.reason or ""
        # A blocked job's note is asked for only where a concurrency group may hold it.
        grouped = j.state == JobState.BLOCKED.value and (group or j.concurrency)
        if j.state == JobState.QUEUED.value or grouped:
            note = client.waiting(j.id) or ""
        table.add_row(
            j.key or j.id,
            Text(j.state, style=style),
            j.capability,
            j.runner_id or "",
            _elapsed(j),
            Text(note),
        )
        if j.state == JobState.RUNNING.value:
            last = client.log(j.id).splitlines()[-3:]
            tails.append(Text(f"{j.key}:", style="bold"))
            tails.extend(Text("  " + line, style="dim") for line in last)
    return Group(table, *tails)


def follow_pipeline(client: PoolClient, pipeline_id: str, console: Console) -> PipelineView:
    """Show progress until the pipeline ends: a live table on a terminal, else one line
    per job state change. Returns the pipeline's final view."""
    from ci_pool.core.specs import FINAL_STATES, JobState

    if console.is_terminal:
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                view = client.pipeline(pipeline_id)
                live.update(_table(client, view))
                if view.state != "running":
                    return view
                time.sleep(0.25)
    seen: dict[str, str] = {}
    while True:
        view = client.pipeline(pipeline_id)
        for j in view.jobs:
            if seen.get(j.id) != j.state:
                seen[j.id] = j.state
                runner = j.runner_id
                extra = f" on {runner}" if j.state == "running" and runner else ""
                final = JobState(j.state) in FINAL_STATES
                why = f" ({j.reason})" if j.reason and final else ""
                console.print(f"{j.key}: {j.state}{extra}{why}", soft_wrap=True)
        if view.state != "running":
            console.print(f"pipeline {view.id} {view.state}")
            return view
        time.sleep(0.25)


def run(
    file: Annotated[Path, typer.Argument(help="Workflow file (.github/workflows/*.yml).")],
    repo: Annotated[str, typer.Option(help="Repository URL.")],
    ref: Annotated[str, typer.Option(help="Branch, tag or commit SHA.")] = "HEAD",
    event: Annotated[
        str,
        typer.Option(
            help="github.event_name for if: conditions (default: push, or "
            "workflow_dispatch with --input)."
        ),
    ] = "",
    input_: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help="A workflow_dispatch input as NAME=VALUE (repeatable), checked against "
            "on.workflow_dispatch.inputs.",
        ),
    ] = None,
    detach: Annotated[bool, typer.Option(help="Print the pipeline id and return.")] = False,
    sync: SyncOption = None,
    worktree: WorktreeOption = Path(),
    runner: RunnerOption = None,
) -> None:
    """Submit a workflow as a pipeline, show live progress, exit with its result."""
    inputs = _inputs(input_ or [])
    event = event or ("workflow_dispatch" if inputs else "push")
    client = _client()
    text = _read(file)
    source = None
    if sync is not None:
        from ci_pool.cli.worktree import send
        from ci_pool.settings import get_settings

        ref, source = send(client, sync, worktree, repo, ref, get_settings().sync_max_bytes)
    view = client.submit_pipeline(text, str(file), repo, ref, event, inputs, source, runner)
    if detach:
        print(view.id)
        return
    err.print(f"pipeline {view.id}: {len(view.jobs)} job(s)")
    final = follow_pipeline(client, view.id, out)
    raise typer.Exit(PIPELINE_EXIT.get(final.state, 3))


def _inputs(given: list[str]) -> dict[str, str]:
    """``--input NAME=VALUE`` options as a mapping; a malformed one is a usage error."""
    inputs: dict[str, str] = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"{item!r} is not NAME=VALUE", field="--input")
        if name in inputs:
            raise InputError(f"input {name!r} is given twice", field="--input")
        inputs[name] = value
    return inputs


def validate(
    files: Annotated[list[Path], typer.Argument(help="Workflow files to check.")],
) -> None:
    """Check workflow files without running them; every error is listed (exit 0 or 1).

    Run inside the repository, it also reads the local actions (uses: ./path) they name."""
    from ci_pool.cli.local_actions import check_local_actions
    from ci_pool.core.workflow.parser import validate_workflow
    from ci_pool.settings import get_settings

    settings = get_settings()
    count = 0
    for file in files:
        found: list[WorkflowError | str]
        try:
            text = _read(file)
        except WorkflowError as exc:
            found = [exc]
        else:
            found = [*validate_workflow(text, str(file), settings.admission)]
            if not found:
                found = [*check_local_actions(file, text, settings.admission)]
        for error in found:
            count += 1
            err.print(str(error), soft_wrap=True)
    if count:
        err.print(f"{count} error(s) in {len(files)} file(s)")
        raise typer.Exit(1)
    err.print(f"{len(files)} file(s) valid")


@pipeline_app.command("show")
def pipeline_show(
    pipeline_id: Annotated[str, typer.Argument(help="Pipeline id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """A pipeline's jobs, their states, runners and results."""
    from ci_pool.service.job_views import as_json as view_json

    client = _client()
    view = client.pipeline(pipeline_id)
    if as_json:
        out.print_json(json.dumps(view_json(view)))
    else:
        out.print(_table(client, view))


@pipeline_app.command("cancel")
def pipeline_cancel(pipeline_id: Annotated[str, typer.Argument(help="Pipeline id.")]) -> None:
    """Cancel every job of the pipeline that has not ended."""
    view = _client().cancel_pipeline(pipeline_id)
    print(f"pipeline {view.id} {view.state}")


def retry(
    pipeline_id: Annotated[str, typer.Argument(help="Pipeline id (or one of its job ids).")],
    detach: Annotated[bool, typer.Option(help="Do not follow the re-run.")] = False,
) -> None:
    """Re-run the failed, cancelled and skipped jobs of a pipeline; passed jobs are kept."""
    client = _client()
    pipeline_id, again = client.retry_pipeline(pipeline_id)
    err.print(f"pipeline {pipeline_id}: re-running {again} job(s)")
    if not again or detach:
        return
    final = follow_pipeline(client, pipeline_id, out)
    raise typer.Exit(PIPELINE_EXIT.get(final.state, 3))
