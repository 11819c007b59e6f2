"""``ci-pool api`` and ``ci-pool token create|list|revoke`` (registered in ci_pool.cli.main)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ci_pool.exceptions import CapabilityNotFound, InputError

if TYPE_CHECKING:
    from ci_pool.service.pool import Pool
    from ci_pool.store.tokens import ApiToken

token_app = typer.Typer(help="API bearer tokens (only their SHA-256 is stored).")
out = Console(highlight=False, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, markup=False, emoji=False)


def _lifetime(text: str) -> timedelta:
    m = re.fullmatch(r"\s*(\d+)\s*([mhd])\s*", text)
    if not m or int(m.group(1)) == 0:
        raise InputError("use a positive number with m/h/d, e.g. 90d, 12h", field="--expires")
    return timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]: int(m.group(1))})


def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    tls_cert: Annotated[
        Path | None, typer.Option(help="TLS certificate (PEM); default: api_tls_cert.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="TLS private key (PEM); default: api_tls_key.")
    ] = None,
    behind_proxy: Annotated[
        bool, typer.Option(help="A TLS-terminating proxy forwards to this address.")
    ] = False,
    proxy_ips: Annotated[
        str, typer.Option(help="With --behind-proxy: proxy addresses whose headers count.")
    ] = "127.0.0.1",
) -> None:
    """Serve the HTTP API (uvicorn), over https when a certificate and key are given (or
    set as api_tls_cert and api_tls_key). Off loopback it needs an API token to exist, and
    TLS or --behind-proxy."""
    from ci_pool.api.server import serve
    from ci_pool.settings import get_settings

    serve(
        get_settings(),
        host,
        port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        behind_proxy=behind_proxy,
        proxy_ips=proxy_ips,
    )


def _pool() -> Pool:
    """The local pool (tokens live in its store)."""
    from ci_pool.service.pool import Pool
    from ci_pool.settings import get_settings

    return Pool(get_settings())


def _csv(values: list[str] | None) -> list[str] | None:
    """Repeated options and comma-separated lists alike: --scope submit,read."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@token_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A unique name, e.g. release-bot.")],
    scope: Annotated[
        list[str], typer.Option(help="submit, read, cancel, admin; comma-separated or repeated.")
    ],
    capability: Annotated[
        list[str] | None,
        typer.Option(help="Limit submissions to these capabilities (comma-separated)."),
    ] = None,
    repo: Annotated[
        list[str] | None,
        typer.Option(help="Limit submissions to repositories matching these globs: 'org/*'."),
    ] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime: 12h, 90d.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Create a token; its plaintext is printed once and never stored."""
    from ci_pool.store import tokens

    pool = _pool()
    settings = pool.settings
    caps = _csv(capability)
    for cap in caps or ():
        if cap not in settings.capabilities:
            raise CapabilityNotFound(cap, list(settings.capabilities))
    plaintext, row = tokens.create_token(
        pool.store,
        name,
        _csv(scope) or [],
        _lifetime(expires) if expires else None,
        capabilities=caps,
        repos=_csv(repo),
    )
    if as_json:
        out.print_json(json.dumps({**_token_dict(row), "token": plaintext}))
    else:
        print(plaintext)
        err.print(f"token {row.name!r} ({', '.join(row.scopes)}): shown once, keep it now")


@token_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """The tokens: name, scopes, created, expires, revoked (never the token)."""
    from ci_pool.store import tokens

    rows = tokens.list_tokens(_pool().store)
    if as_json:
        out.print_json(json.dumps([_token_dict(r) for r in rows]))
        return
    table = Table("name", "scopes", "limits", "created", "expires", "state")
    for r in rows:
        state = "revoked" if r.revoked else ("active" if r.is_active() else "expired")
        table.add_row(
            r.name,
            ",".join(r.scopes),
            _limits(r),
            r.created_at.isoformat(timespec="seconds"),
            r.expires_at.isoformat(timespec="seconds") if r.expires_at else "never",
            state,
        )
    out.print(table)


@token_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="Token name.")]) -> None:
    """Revoke a token at once."""
    from ci_pool.store import tokens

    tokens.revoke(_pool().store, name)
    err.print(f"token {name!r} revoked")


def _token_dict(row: ApiToken) -> dict[str, object]:
    return {
        "name": row.name,
        "scopes": row.scopes,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "revoked": row.revoked,
        "capabilities": row.capabilities,
        "repos": row.repos,
    }


def _limits(row: ApiToken) -> str:
    parts = []
    if row.capabilities is not None:
        parts.append("capabilities " + ",".join(row.capabilities))
    if row.repos is not None:
        parts.append("repos " + ",".join(row.repos))
    return "; ".join(parts) or "none"
