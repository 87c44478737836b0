"""Opening the database: one connection for maintenance, or the service's pool."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from service.settings import Settings
from service.store.migrate import migrate
from service.store.pepper_fingerprint import check_pepper


@contextlib.asynccontextmanager
async def database_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One connection to the database, closed on exit; migrating is up to the caller."""
    if not settings.database_url:
        raise RuntimeError("KEYLEDGER_DATABASE_URL is not set")
    conn = await asyncpg.connect(settings.database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def connect_database(settings: Settings, *, bounded: bool = True) -> asyncpg.Pool:
    """Apply migrations, check the pepper's fingerprint (when one is set), open the pool.

    Every statement on the pool is bounded by ``db_command_timeout_seconds``;
    ``bounded=False`` lifts that for offline maintenance whose statements may
    run long (``projections rebuild``).
    """
    async with database_connection(settings) as conn:
        await migrate(conn)
        if settings.pepper is not None:
            await check_pepper(conn, settings.pepper_bytes)
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        command_timeout=settings.db_command_timeout_seconds if bounded else None,
    )
