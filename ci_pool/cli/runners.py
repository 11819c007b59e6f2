"""``ci-pool runners``, ``drain``, ``undrain`` and ``scale``, and ``ci-pool runner token
create|revoke|list``: runner identities (admin); locally or through the API like the other
commands (registered in ci_pool.cli.main)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ci_pool.cli.loopback import up_client
from ci_pool.cli.options import table_console
from ci_pool.cli.views import any_json

if TYPE_CHECKING:
    from ci_pool.cli import views
    from ci_pool.cli.client import PoolClient
    from ci_pool.service import views as service_views

runner_app = typer.Typer(
    help="Registered runners: registration tokens, revocation, the list; a diagnostic "
    "command on one runner (exec) and that audit (exec-log).",
    no_args_is_help=True,
)
runner_token_app = typer.Typer(help="One-time registration tokens.", no_args_is_help=True)
runner_app.add_typer(runner_token_app, name="token")
out = Console(highlight=False, markup=False, emoji=False)
wide = table_console()
err = Console(stderr=True, highlight=False, markup=False, emoji=False)


def _client() -> PoolClient:
    from ci_pool.cli.client import connect
    from ci_pool.settings import get_settings

    return connect(get_settings())


def runners(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Workers with their state (online, busy, draining, unhealthy, lost), jobs and last
    heartbeat; an unhealthy runner says why and what fixes it."""
    quick = up_client()
    rows: list[views.RunnerStatus] | list[service_views.RunnerStatus]
    rows = quick.runners() if quick is not None else _client().runners()
    if as_json:
        wide.print_json(json.dumps([any_json(r) for r in rows]))
        return
    table = Table("runner", "capability", "state", "host", "slots", "warm", "jobs", "last seen")
    now = datetime.now().timestamp()
    for r in rows:
        table.add_row(
            r.runner_id,
            r.capability,
            str(f"unhealthy: {r.unhealthy}") if r.unhealthy else r.state,
            r.host,
            str(r.concurrency),
            str(r.extra.get("warm", 0)),
            ", ".join(r.jobs) or "-",
            f"{now - r.last_seen:.1f}s ago",
        )
    wide.print(table)


def drain(
    runner_id: Annotated[str, typer.Argument(help="Runner id (see ci-pool runners).")],
) -> None:
    """Stop a runner taking new jobs; it finishes the running one, then exits."""
    print(_client().drain(runner_id))


def undrain(runner_id: Annotated[str, typer.Argument(help="Runner id.")]) -> None:
    """Cancel a drain that has not finished yet: the runner takes jobs again."""
    print(_client().undrain(runner_id))


def scale(
    capability: Annotated[str, typer.Argument(help="Capability (queue) to scale.")],
    slots: Annotated[int, typer.Argument(min=0, help="Jobs the capability runs at once.")],
) -> None:
    """Grow or shrink the worker pools of a capability to this many concurrent jobs."""
    for line in _client().scale(capability, slots):
        print(line)


@runner_token_app.command("create")
def token_create(
    capability: Annotated[
        list[str], typer.Option(help="A capability the runner may serve (repeat for more).")
    ],
    expires: Annotated[str, typer.Option(help="Lifetime: 30m, 1h, 7d.")] = "1h",
    name: Annotated[
        str | None,
        typer.Option(
            help="Only the runner of this name may use it; if it is registered (and not "
            "revoked) it gets a new credential (rotation)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make a one-time registration token; it is printed once. A runner started with it
    (CI_POOL_REGISTRATION_TOKEN) exchanges it for its own credential at its first start."""
    caps = [c.strip() for value in capability for c in value.split(",") if c.strip()]
    made = _client().create_runner_token(caps, expires, name)
    if as_json:
        out.print(made.model_dump_json())
        return
    out.print(made.token)
    err.print(
        f"registration token for {', '.join(made.capabilities)}"
        + (f" (runner {made.name} only)" if made.name else "")
        + ", valid until "
        f"{made.expires_at:%Y-%m-%d %H:%M} UTC, usable once; it is not shown again"
    )


@runner_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The runner's registered name.")]) -> None:
    """Revoke a runner: its credential and Redis user end at once, its connections drop,
    it stops taking jobs and exits; the reaper re-queues the job it was running."""
    row = _client().revoke_runner(name)
    out.print(
        f"runner {row.name} revoked by {row.revoked_by} at {row.revoked_at:%Y-%m-%d %H:%M:%S}"
    )


@runner_app.command("list")
def list_identities(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every registered runner; revoked ones say who revoked them and when."""
    rows = _client().runner_identities()
    if as_json:
        out.print(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    table = Table("runner", "host", "capabilities", "registered", "revoked")
    for r in rows:
        revoked = f"{r.revoked_at:%Y-%m-%d %H:%M} by {r.revoked_by}" if r.revoked_at else "-"
        table.add_row(
            r.name,
            r.host or "-",
            ",".join(r.capabilities),
            f"{r.created_at:%Y-%m-%d %H:%M}",
            revoked,
        )
    out.print(table)
