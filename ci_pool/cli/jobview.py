"""What ``ci-pool show`` prints of a job's reports: annotations and step summaries."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def _plain(out: Console, text: str) -> None:
    """Text a job wrote, printed as it is: never read as markup or emoji codes, not wrapped."""
    out.print(text, markup=False, emoji=False, highlight=False, soft_wrap=True)


def show_reports(out: Console, data: dict[str, Any]) -> None:
    """The annotations and step summaries of the job's latest attempt."""
    if data.get("annotations"):
        out.print("  annotations")
        for a in data["annotations"]:
            where = a["file"] or ""
            if where and a["line"]:
                where += f":{a['line']}" + (f":{a['col']}" if a["col"] else "")
            title = f"{a['title']}: " if a["title"] else ""
            _plain(
                out,
                f"    {a['level']:<8}step {a['step']}  "
                + (f"{where}  " if where else "")
                + title
                + a["message"].replace("\n", "\n      "),
            )
    for summary in data.get("summaries") or ():
        out.print(f"  summary of step {summary['step']}", end="")
        _plain(out, f" ({summary['name']})")
        for line in summary["markdown"].splitlines():
            _plain(out, f"    {line}")
