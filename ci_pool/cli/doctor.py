"""``ci-pool doctor``, ``ci-pool images build`` and ``ci-pool db upgrade``: getting a
machine ready to submit to and run the pool, and saying what is missing."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from ci_pool.service.doctor import Check
    from ci_pool.settings import Settings

images_app = typer.Typer(help="Job images of the capabilities.", no_args_is_help=True)
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
out = Console(highlight=False, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, markup=False, emoji=False)

_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


def doctor(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a list of {name, status, detail, fix}.")
    ] = False,
    skip_bench: Annotated[
        bool, typer.Option("--skip-bench", help="Skip the nested-Docker overhead workload.")
    ] = False,
    submitter: Annotated[
        bool,
        typer.Option(
            "--submitter", help="Only what submitting needs (no Docker, disk or image checks)."
        ),
    ] = False,
    capability: Annotated[
        list[str] | None,
        typer.Option("--capability", "-c", help="Check only this capability's runner needs."),
    ] = None,
    git_url: Annotated[
        list[str] | None,
        typer.Option(
            "--git-url",
            help="A repository URL whose git server must answer over protocol v2 "
            "(repeatable; adds to the setting doctor_git_urls).",
        ),
    ] = None,
) -> None:
    """Check this machine for the pool; each finding ok/warn/fail with its fix.

    Broker, store, clock, git (and protocol v2 to the git servers), disk, Docker, images,
    cgroups, nested-Docker overhead.

    Exits 0 when nothing fails, 1 otherwise."""
    from ci_pool.service.doctor import Status, run_checks
    from ci_pool.settings import get_settings

    settings = get_settings()
    settings, store = _as_registered_runner(settings)
    checks = run_checks(
        settings,
        runner=not submitter,
        bench=not skip_bench,
        capabilities=capability or (),
        git_urls=git_url or (),
        store=store,
    )
    if as_json:
        print(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        for c in checks:
            out.print(
                Text.assemble((f"{c.status.value:<5}", _STYLE[c.status.value]), f"{c.name:<18}"),
                Text(c.detail),
                soft_wrap=True,
            )
            if c.fix:
                out.print(Text.assemble(" " * 23, ("fix: ", "bold"), c.fix), soft_wrap=True)
    if any(c.status is Status.FAIL for c in checks):
        raise typer.Exit(1)


def _as_registered_runner(settings: Settings) -> tuple[Settings, Check | None]:
    """On a registered runner, check what its worker uses: Redis as its own user, and the
    API (its credential) instead of a store it does not hold."""
    from ci_pool.exceptions import CIPoolError
    from ci_pool.service.doctor import Check, Status
    from ci_pool.worker.api_store import ApiRunnerStore
    from ci_pool.worker.identity import load
    from ci_pool.worker.runner_store import through_api

    try:
        secrets = load(settings)
        if secrets is not None:
            settings = settings.model_copy(
                update={"broker_url": secrets.broker_url(settings.broker_url)}
            )
        if not through_api(settings):
            return settings, None
        me = ApiRunnerStore(settings).whoami()
    except CIPoolError as exc:
        fix = "check CI_POOL_API_URL and the runner's credential (ci-pool runner list)"
        return settings, Check("runner identity", Status.FAIL, str(exc), fix)
    detail = f"runner {me['name']}: the API at {settings.api_url} accepts its credential"
    return settings, Check("runner identity", Status.OK, detail)


@images_app.command("build")
def build(
    capabilities: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="CAP",
            help="Capabilities to build (default: every one that runs in Docker).",
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Pull nothing: linux is built from this machine's busybox when its base "
            "image is not here; other images need their base image here.",
        ),
    ] = False,
) -> None:
    """Build worker_images/CAP/Dockerfile, tagged as the capability's image.

    Offline, linux falls back to a small image of this machine's busybox, and says so.

    Exits 0 when every build succeeded, 1 otherwise."""

    from ci_pool import container_engine
    from ci_pool.exceptions import ExecutorError
    from ci_pool.service.images import ImageBuilder, worker_images_dir
    from ci_pool.settings import get_settings

    settings = get_settings()
    try:
        client = container_engine.connect(settings, timeout=3600, ping=True)
    except ExecutorError as exc:
        err.print(Text.assemble(("error:", "red"), f" {exc}"), soft_wrap=True)
        raise typer.Exit(1) from None
    failed = 0
    with err.status("building...") as status:

        def on_line(line: str) -> None:
            if line.startswith("Step ") or "instead" in line:
                status.update(line[:100])
                err.print(Text(line, style="dim"), soft_wrap=True)

        builder = ImageBuilder(client, settings.capabilities, worker_images_dir(), on_line)
        for cap in builder.targets(capabilities or ()):
            status.update(f"building {cap.name} ({cap.image or 'no image'})...")
            result = builder.build(cap, offline=offline)
            if not result.ok:
                failed += 1
                err.print(Text.assemble(("error:", "red"), f" {cap.name}: {result.detail}"),
                          soft_wrap=True)  # fmt: skip
            elif result.source == "busybox":
                out.print(Text.assemble((f"{cap.name}: ", "bold"), (result.detail, "yellow")),
                          soft_wrap=True)  # fmt: skip
            else:
                out.print(Text.assemble((f"{cap.name}: ", "bold"), (result.detail, "green")),
                          soft_wrap=True)  # fmt: skip
    client.close()
    sys.stdout.flush()
    raise typer.Exit(1 if failed else 0)


@db_app.command("upgrade")
def upgrade() -> None:
    """Create the store or bring its schema to the newest migration."""
    from ci_pool.service.doctor import redact
    from ci_pool.service.pool import Pool
    from ci_pool.settings import get_settings
    from ci_pool.store.migrate import HEAD

    settings = get_settings()
    Pool(settings).store  # noqa: B018  (opening the store migrates it)
    print(f"store {redact(settings.resolved_store_url)} at migration {HEAD}")
