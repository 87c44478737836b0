"""The aiohttp application: resources set up and torn down with ``cleanup_ctx``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from service.expiry import ExpirySweeper
from service.http import health_routes, key_routes, openapi, query_routes, verify_routes
from service.http.body import MAX_BODY_BYTES
from service.http.context import CALLERS, COMMANDS, POOL, SETTINGS
from service.http.metrics import install_metrics
from service.http.middleware import request_context
from service.http.outbox_side import run_outbox_relay
from service.http.protocol_errors import redact_refused_requests
from service.http.read_side import run_projections
from service.http.witness_side import guard_the_log
from service.key_commands import KeyCommandHandler
from service.settings import Settings
from service.store.migrate import migrate
from service.store.pepper_fingerprint import check_pepper
from service.verification.callers import CallerAuthenticator


async def connect_database(settings: Settings, *, bounded: bool = True) -> asyncpg.Pool:
    """Apply migrations, check the pepper's fingerprint (when one is set), open the pool.

    Every statement on the pool is bounded by ``db_command_timeout_seconds``;
    ``bounded=False`` lifts that for offline maintenance whose statements may
    run long (``projections rebuild``).
    """
    if not settings.database_url:
        raise RuntimeError("KEYLEDGER_DATABASE_URL is not set")
    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn)
        if settings.pepper is not None:
            await check_pepper(conn, settings.pepper_bytes)
    finally:
        await conn.close()
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        command_timeout=settings.db_command_timeout_seconds if bounded else None,
    )


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await connect_database(settings)
    app[POOL] = pool
    app[COMMANDS] = KeyCommandHandler(
        pool,
        max_active_keys=settings.max_active_keys_per_org,
        idempotency_ttl_hours=settings.idempotency_ttl_hours,
        lock_timeout_seconds=settings.append_lock_timeout_seconds,
    )
    app[CALLERS] = CallerAuthenticator(pool, settings.pepper_bytes)
    yield
    await pool.close()


async def _expiry_sweeper(app: web.Application) -> AsyncIterator[None]:
    sweeper = ExpirySweeper(app[COMMANDS], app[SETTINGS].expiry_sweep_interval_seconds)
    task = asyncio.create_task(sweeper.run(), name="expiry-sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(settings: Settings) -> web.Application:
    """The keyledger API, ready to be run by ``web.run_app`` or a test server."""
    settings.pepper_bytes  # noqa: B018 - fail at construction, not on the first request
    redact_refused_requests()
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[request_context])
    app[SETTINGS] = settings
    # Shutdown order (SIGTERM, see `keyledger serve`): aiohttp first stops accepting
    # connections and lets in-flight requests finish (`shutdown_timeout`), then tears the
    # cleanup_ctx entries down in REVERSE order of this list:
    #   expiry sweeper (no new events) → projections → outbox relay (publishes what the
    #   requests committed, then drains NATS) → truncation guard → verification (flushes
    #   last_used_at, closes its JetStream feed) → database pool (last: everything uses it).
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(verify_routes.verification_context)
    app.cleanup_ctx.append(guard_the_log)
    app.cleanup_ctx.append(run_outbox_relay)
    app.cleanup_ctx.append(run_projections)
    app.cleanup_ctx.append(_expiry_sweeper)
    install_metrics(app)
    app.add_routes(health_routes.routes)
    app.add_routes(openapi.routes)
    app.add_routes(key_routes.routes)
    app.add_routes(verify_routes.routes)
    app.add_routes(query_routes.routes)
    return app
