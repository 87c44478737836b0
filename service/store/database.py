"""Opening the database: migrations, the pepper's fingerprint, then the pool."""

from __future__ import annotations

import asyncpg

from service.settings import Settings
from service.store.migrate import migrate
from service.store.pepper_fingerprint import check_pepper


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
