"""Run the API with uvicorn."""

from __future__ import annotations

import ipaddress

import uvicorn

from ci_pool import tokens
from ci_pool.api.app import create_app
from ci_pool.exceptions import ConfigError
from ci_pool.pool import Pool
from ci_pool.settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(
    settings: Settings, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info"
) -> uvicorn.Server:
    """A configured uvicorn server; refuses a non-loopback host while no token exists."""
    if not is_loopback(host) and not tokens.any_active(Pool(settings).store):
        raise ConfigError(
            f"refusing to listen on {host}: no active API token exists, so nobody could use "
            "the API from another host. Create one first (`ci-pool token create NAME "
            "--scope read`) or listen on 127.0.0.1",
            key="host",
        )
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        ws="none",
        lifespan="off",
        server_header=False,
    )
    return uvicorn.Server(config)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the API until interrupted."""
    make_server(settings, host, port).run()
