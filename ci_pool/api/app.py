"""``create_app(settings)``: the FastAPI application. Nothing connects until a request."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

import ci_pool.store.tokens  # noqa: F401  (registers the api_tokens table for init_schema)
from ci_pool.api import (
    errors,
    routes_dispatch,
    routes_hooks,
    routes_identities,
    routes_jobs,
    routes_pipelines,
    routes_repos,
    routes_runner_io,
    routes_runners,
    routes_sync,
)
from ci_pool.api.deps import PoolDep, ReadToken
from ci_pool.api.limits import BodyLimit
from ci_pool.api.routes_jobs import ERRORS_AS_JSON
from ci_pool.api.schemas import Health
from ci_pool.service.pool import Pool
from ci_pool.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="ci-pool",
        version="1",
        summary="Submit, inspect and cancel CI jobs on a self-hosted runner pool.",
    )
    app.state.pool = Pool(settings)
    errors.install(app)
    app.add_middleware(
        BodyLimit, max_body=settings.max_body_bytes, sync_max=settings.sync_max_bytes
    )
    app.include_router(routes_jobs.router)
    app.include_router(routes_dispatch.router)
    app.include_router(routes_pipelines.router)
    app.include_router(routes_hooks.router)
    app.include_router(routes_identities.router)
    app.include_router(routes_runners.router)
    app.include_router(routes_runner_io.router)
    app.include_router(routes_repos.router)
    app.include_router(routes_sync.router)
    # The web view (/ui/): pages over the same service layer and access rules.
    from ci_pool.ui import web

    web.install(app)

    # Health checks get threads of their own: the shared pool of request threads may be
    # full of submits waiting on slow git servers, and /healthz must still answer.
    health_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ci-pool-healthz")

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["ops"])
    async def healthz(request: Request) -> JSONResponse:
        """200 when the store and the broker answer; 503 naming the one that does not."""
        pool: Pool = request.app.state.pool
        loop = asyncio.get_running_loop()
        checks = await loop.run_in_executor(health_threads, _health_checks, pool, settings)
        ok = all(v == "ok" for v in checks.values())
        body = Health(status="ok" if ok else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={**ERRORS_AS_JSON, 200: {"content": {"text/plain": {}}}},
        tags=["ops"],
    )
    def metrics(pool: PoolDep, token: ReadToken) -> PlainTextResponse:
        """Prometheus text format: queue depth, oldest wait, jobs by state, durations,
        dispatch latency, runners by state (a ``read`` token; Prometheus sends it as
        ``authorization: {credentials: ...}``)."""
        from ci_pool.service.monitoring import render_metrics

        return PlainTextResponse(
            render_metrics(pool), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return app


def _health_checks(pool: Pool, settings: Settings) -> dict[str, str]:
    """ "ok" or why not, for the store and the broker."""
    checks = {"store": "ok", "broker": "ok"}
    try:
        pool.store.ping()
    except Exception as exc:
        errors.log.warning("healthz: store check failed: %s", exc)
        checks["store"] = f"unreachable: {type(exc).__name__}"
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        errors.log.warning("healthz: broker check failed: %s", exc)
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    finally:
        client.close()
    return checks
