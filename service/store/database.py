"""Opening the database: one connection for maintenance, or the service's pool."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg

from service.settings import Settings, SettingsError
from service.store.migrate import migrate
from service.store.pepper_fingerprint import check_pepper

# A database that does not answer in this long is reported, not waited for (asyncpg: 60 s).
CONNECT_TIMEOUT_SECONDS = 10.0


def _where(url: str) -> str:
    """``url`` without its password: the message may reach a terminal or a log."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
    except ValueError:
        return "(an unparseable URL)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


@contextlib.asynccontextmanager
async def database_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One connection to the database, closed on exit; migrating is up to the caller."""
    if not settings.database_url:
        raise SettingsError("missing settings: KEYLEDGER_DATABASE_URL")
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=CONNECT_TIMEOUT_SECONDS)
    except (
        OSError,
        TimeoutError,
        ValueError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as exc:
        raise SettingsError(
            f"cannot connect to the database at {_where(settings.database_url)}"
            f" ({type(exc).__name__}: {_first_line(exc)}): check KEYLEDGER_DATABASE_URL"
        ) from exc
    try:
        yield conn
    finally:
        await conn.close()


# Every statement planned for the values and table sizes of its own run. asyncpg prepares
# each statement once per connection, and PostgreSQL then keeps a generic plan: one made
# while the tables were nearly empty (a new database, before autovacuum's first ANALYZE)
# scanned them whole on every batch as they grew — GenerateKey at 32 clients fell to half
# its rate within a minute, every batch reading the whole key registry and log. Planning
# each run costs tens of microseconds per batch statement.
SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


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
        server_settings=SERVER_SETTINGS,
    )
