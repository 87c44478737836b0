"""The service's PostgreSQL pool: how its statements are planned."""

from __future__ import annotations

from service.settings import Settings
from service.store.database import connect_database


async def test_every_statement_is_planned_for_its_own_run(settings: Settings) -> None:
    # A plan kept from a nearly empty database scans whole tables once they have grown
    # (GenerateKey fell to half its rate within a minute of a new database's life).
    pool = await connect_database(settings)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
    finally:
        await pool.close()
