"""``ci-pool provision plan|apply|remove|rotate`` (registered in ci_pool.cli.main)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

#: Seconds apply and rotate wait for a new worker's heartbeat (ci_pool.provision.apply's
#: default, which tests/unit/cli/test_startup.py keeps equal).
HEARTBEAT_TIMEOUT = 300.0
#: Seconds an upgrade waits for a drained runner's running job (apply's DRAIN_TIMEOUT).
DRAIN_TIMEOUT = 3600.0

provision_app = typer.Typer(
    help="Provision runner containers on Incus hosts over SSH: plan (a dry run that reads no "
    "secret), apply a plan with --confirm, remove or rotate a runner. Exit codes: 0 ok, "
    "2 bad input (or --confirm missing), 3 blocked, stale plan or failed (nothing or only "
    "what the audit log lists was changed).",
    no_args_is_help=True,
)
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def _print(record: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(record, indent=2, sort_keys=True))
    else:
        out.print(text, markup=False)


@provision_app.command("plan")
def plan(
    host: Annotated[str, typer.Option(help="Runner host (SSH).")],
    capability: Annotated[str, typer.Option(help="Capability the runners serve.")],
    count: Annotated[int, typer.Option(help="Runner containers wanted on the host.")],
    port: Annotated[int, typer.Option(help="SSH port.")] = 22,
    user: Annotated[str, typer.Option(help="SSH user (must be allowed to run incus).")] = "root",
    known_hosts: Annotated[
        Path, typer.Option(help="known_hosts file that must already pin the host's key.")
    ] = Path("~/.ssh/known_hosts"),
    identity: Annotated[Path, typer.Option(help="Private key to log in with.")] = Path(
        "~/.ssh/id_ed25519"
    ),
    credentials: Annotated[
        Path | None,
        typer.Option(
            help="CI_POOL_API_URL=... / CI_POOL_BROKER_URL=... file (0600): where runners "
            "reach the pool; only its presence is checked here (default: "
            "<home>/provision/credentials.env)."
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(help="Incus image with cloud-init (default: images:debian/12/cloud)."),
    ] = None,
    package: Annotated[
        str, typer.Option(help="pip requirement or wheel URL of ci-pool for the runners.")
    ] = "",
    templates: Annotated[
        Path | None,
        typer.Option(help="Template directory (default: provisioning/ of this ci-pool)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Observe the host and print what apply would do (changes nothing, reads no secret)."""
    from ci_pool.provision import plan as plan_mod
    from ci_pool.provision.templates import TEMPLATES_DIR
    from ci_pool.settings import get_settings

    settings = get_settings()
    result = plan_mod.make_plan(
        settings,
        plan_mod.PlanRequest(
            host=host,
            capability=capability,
            count=count,
            port=port,
            user=user,
            known_hosts=known_hosts,
            identity=identity,
            credentials=credentials or settings.home / "provision" / "credentials.env",
            image=image or plan_mod.DEFAULT_IMAGE,
            package=package,
            templates=templates or TEMPLATES_DIR,
        ),
    )
    _print(result, as_json, plan_mod.format_plan(result))
    if result["blockers"]:
        err.print(
            f"error: plan {result['id']} is blocked: "
            + "; ".join(b["code"] for b in result["blockers"]),
            markup=False,
        )
        raise typer.Exit(3)


@provision_app.command("apply")
def apply(
    plan_id: Annotated[str, typer.Option("--plan-id", help="Id printed by plan.")],
    confirm: Annotated[bool, typer.Option(help="Really change the host.")] = False,
    heartbeat_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for new workers to heartbeat.")
    ] = HEARTBEAT_TIMEOUT,
    drain_timeout: Annotated[
        float,
        typer.Option(
            min=0, help="Seconds an upgrade waits for a runner's running job after draining it."
        ),
    ] = DRAIN_TIMEOUT,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Apply a plan exactly as shown; refused if the host changed since. Outdated runners
    (plan says upgrade) are drained, updated, restarted and checked, one at a time."""
    from ci_pool.provision import apply as apply_mod
    from ci_pool.settings import get_settings

    record = apply_mod.apply(
        get_settings(),
        plan_id,
        confirm=confirm,
        heartbeat_timeout=heartbeat_timeout,
        drain_timeout=drain_timeout,
    )
    _print(record, as_json, apply_mod.result_text(record))


@provision_app.command("remove")
def remove(
    runner: Annotated[str, typer.Argument(help="Container name (or a live runner id on it).")],
    confirm: Annotated[bool, typer.Option(help="Really remove it.")] = False,
    timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for its running jobs.")
    ] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Drain a runner, wait for its jobs, delete its container and revoke its runner
    identity (credential and Redis user; ci-pool runner list shows who revoked it)."""
    from ci_pool.provision import remove as remove_mod
    from ci_pool.settings import get_settings

    record = remove_mod.remove(get_settings(), runner, confirm=confirm, timeout=timeout)
    text = record.get("text") or (
        f"{record['container']} removed: drained {', '.join(record['drained']) or '-'}, "
        f"revoked {', '.join(record['revoked']) or '-'}"
    )
    _print(record, as_json, text)


@provision_app.command("rotate")
def rotate(
    runner: Annotated[str, typer.Argument(help="Container name (or a live runner id on it).")],
    confirm: Annotated[bool, typer.Option(help="Really rotate.")] = False,
    heartbeat_timeout: Annotated[
        float,
        typer.Option(min=1, help="Seconds to wait for the worker to heartbeat again."),
    ] = HEARTBEAT_TIMEOUT,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Re-key a runner: it registers again with a one-time token for its name, which ends
    its old credential; done once the worker heartbeats again."""
    from ci_pool.provision import remove as remove_mod
    from ci_pool.settings import get_settings

    record = remove_mod.rotate(
        get_settings(), runner, confirm=confirm, heartbeat_timeout=heartbeat_timeout
    )
    text = record.get("text") or (
        f"{record['container']}: registered again with a new credential"
        + (f"; revoked token(s) {', '.join(record['revoked'])}" if record["revoked"] else "")
    )
    _print(record, as_json, text)
