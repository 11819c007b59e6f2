"""What ``ci-pool show`` prints of a job beyond its state: the recorded rows (permissions,
environment, fetched actions, --sync), annotations and step summaries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from ci_pool.cli import views
    from ci_pool.service import job_views

    #: A job's view as either client reads it (``ci_pool.cli.views`` on the quick way to up).
    JobView = views.JobView | job_views.JobView


def _plain(out: Console, text: str) -> None:
    """Text a job wrote, printed as it is: never read as markup or emoji codes, not wrapped."""
    out.print(text, markup=False, emoji=False, highlight=False, soft_wrap=True)


def show_reports(out: Console, job: JobView) -> None:
    """The annotations and step summaries of the job's latest attempt."""
    if job.annotations:
        out.print("  annotations")
        for a in job.annotations:
            where = a.file or ""
            if where and a.line:
                where += f":{a.line}" + (f":{a.col}" if a.col else "")
            title = f"{a.title}: " if a.title else ""
            _plain(
                out,
                f"    {a.level:<8}step {a.step}  "
                + (f"{where}  " if where else "")
                + title
                + a.message.replace("\n", "\n      "),
            )
    for summary in job.summaries or ():
        out.print(f"  summary of step {summary.step}", end="")
        _plain(out, f" ({summary.name})")
        for line in summary.markdown.splitlines():
            _plain(out, f"    {line}")


def recorded_rows(job: JobView) -> list[tuple[str, str]]:
    """The ``permissions`` (as scopes), ``environment`` and fetched actions rows of a job, and
    the local changes (``--sync``) its latest attempt ran on."""
    rows = []
    if job.permissions is not None:
        granted = job.permissions
        text = ", ".join(f"{k}: {v}" for k, v in granted.items()) if granted else "none"
        rows.append(("scopes", text.replace("*: ", "all: ")))
    if job.environment:
        env = job.environment
        rows.append(("deploys to", env.name + (f" ({env.url})" if env.url else "")))
    evidence = job.evidence
    if evidence is not None and evidence.sync_mode:
        rows.append(("sync", f"{evidence.sync_mode} sha256 {evidence.sync_sha256}"))
    # The commit each fetched action ran at.
    for uses, sha in ((evidence.actions if evidence else None) or {}).items():
        rows.append(("action", f"{uses} @ {sha}"))
    return rows
