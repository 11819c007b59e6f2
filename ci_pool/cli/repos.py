"""``ci-pool repos``: repositories registered for schedules. Their workflows'
``on.schedule`` crons are run by ``ci-pool beat`` at the registered ref. Through the API
when CI_POOL_API_URL is set (an ``admin`` token to add or remove), else on the local store.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

repos_app = typer.Typer(
    help="Repositories registered for schedules: ci-pool beat runs their workflows' "
    "on.schedule crons at the registered ref.",
    no_args_is_help=True,
)
out = Console(highlight=False)


def _remote() -> Any:
    from ci_pool.cli.http_client import HttpClient
    from ci_pool.settings import get_settings

    settings = get_settings()
    return HttpClient(settings) if settings.api_url else None


def _local() -> Any:
    from ci_pool.service.pool import Pool
    from ci_pool.settings import get_settings

    return Pool(get_settings())


def _row(row: Any) -> dict[str, Any]:
    """A registration as the API shows it."""
    from ci_pool.api.routes_repos import public

    return public(row).model_dump(mode="json")


@repos_app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="The repository's clone URL.")],
    ref: Annotated[str, typer.Option(help="Branch or tag whose workflows run.")] = "main",
) -> None:
    """Register a repository; beat starts its workflows' schedules from now on."""
    client = _remote()
    if client is not None:
        data = client._json("POST", "/v1/repos", json={"url": url, "ref": ref})
    else:
        from ci_pool.service.schedules import register

        data = _row(register(_local(), url, ref))
    print(f"registered {data['url']} at {data['ref']} as {data['id']}")


@repos_app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Registered repositories and the schedules beat last read from them."""
    client = _remote()
    if client is not None:
        rows = client._json("GET", "/v1/repos")["data"]
    else:
        from ci_pool.store.schedules import list_repositories

        rows = [_row(r) for r in list_repositories(_local().store)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "url", "ref", "schedules", "last read")
    for r in rows:
        crons = ", ".join(f"{s['file']}: {s['cron']}" for s in r["schedules"]) or "-"
        seen = (r["scanned_commit"] or "")[:12] or "not yet"
        if r["scan_error"]:
            seen += f" ({r['scan_error']})"
        table.add_row(r["id"], r["url"], r["ref"], crons, seen)
    out.print(table)


@repos_app.command("remove")
def remove(key: Annotated[str, typer.Argument(help="Registration id or URL.")]) -> None:
    """Unregister a repository; its schedules stop."""
    client = _remote()
    if client is not None:
        data = client._json("DELETE", f"/v1/repos/{key}")
    else:
        from ci_pool.store.schedules import remove_repository

        data = _row(remove_repository(_local().store, key))
    print(f"removed {data['url']}")


def schedules(pool: Any) -> Any:
    """The schedule part of one ``beat`` process, with an id of its own."""
    import socket
    import uuid

    from ci_pool.service.schedules import Schedules

    return Schedules(pool, f"beat@{socket.gethostname()}:{uuid.uuid4().hex[:8]}")


def tick(schedules: Any, err: Console) -> None:
    """One schedule tick of ``beat``, saying what it started and what went wrong."""
    done = schedules.tick()
    for repo, file, pipeline_id in done.started:
        err.print(
            f"schedule: {repo} {file}: pipeline {pipeline_id} started", soft_wrap=True, markup=False
        )
    for repo, why in done.problems:
        err.print(f"schedule: {repo}: {why}", soft_wrap=True, markup=False)
