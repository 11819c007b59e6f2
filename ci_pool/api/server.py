"""Run the API with uvicorn."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from ci_pool.addresses import is_loopback
from ci_pool.api.app import create_app
from ci_pool.exceptions import ConfigError
from ci_pool.service.pool import Pool
from ci_pool.settings import Settings
from ci_pool.store import tokens
from ci_pool.tls import server_files

log = logging.getLogger(__name__)


def make_server(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    behind_proxy: bool = False,
    proxy_ips: str = "127.0.0.1",
) -> uvicorn.Server:
    """A configured uvicorn server. TLS from ``tls_cert``/``tls_key``, else the settings'
    ``api_tls_cert``/``api_tls_key``. Off loopback it needs an active token, and TLS or
    ``behind_proxy`` (a TLS-terminating proxy in front, whose X-Forwarded-* headers are
    trusted from ``proxy_ips`` only)."""
    tls_cert = tls_cert or settings.api_tls_cert
    tls_key = tls_key or settings.api_tls_key
    server_files(tls_cert, tls_key)
    if not is_loopback(host):
        if not tokens.any_active(Pool(settings).store):
            raise ConfigError(
                f"refusing to listen on {host}: no active API token exists, so nobody could use "
                "the API from another host. Create one first (`ci-pool token create NAME "
                "--scope read`) or listen on 127.0.0.1",
                key="host",
            )
        if tls_cert is None and not behind_proxy:
            raise ConfigError(
                f"refusing to listen on {host} without TLS: bearer tokens would cross the "
                "network in clear. Give --tls-cert and --tls-key (or set api_tls_cert and "
                "api_tls_key), or --behind-proxy when a TLS-terminating proxy forwards to "
                "this address",
                key="tls",
            )
    app = create_app(settings)
    restore_runner_users(app.state.pool)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ws="none",
        lifespan="off",
        server_header=False,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        proxy_headers=behind_proxy,
        forwarded_allow_ips=proxy_ips if behind_proxy else None,
    )
    return uvicorn.Server(config)


def restore_runner_users(pool: Pool) -> None:
    """Re-create the Redis users of active runners that Redis lost while the API was down
    (the reaper does the same at each sweep); a failure only delays it to that sweep."""
    try:
        restored = pool.runner_users.restore_missing()
    except Exception as exc:
        log.warning("runners' Redis users not checked at start: %s", exc)
        return
    if restored:
        log.warning("re-created the Redis users of runners %s", ", ".join(restored))


@contextmanager
def running(server: uvicorn.Server, start_timeout: float = 20.0) -> Iterator[None]:
    """Serve from a thread of this process while the block runs (tests, benchmarks)."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080, **tls: Any) -> None:
    """Serve the API until interrupted."""
    make_server(settings, host, port, **tls).run()
