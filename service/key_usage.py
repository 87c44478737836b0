"""``last_used_at``: recorded without slowing verification.

A successful verification only sets ``pending[key_id] = minute`` in memory.
A background task flushes the pending minutes every few seconds in one
statement to ``key_usage`` (migration 0030) and, when the ``key_views``
projection exists, to its ``last_used_at`` column. Values only move forward
(``GREATEST``), so replicas flushing in any order agree.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import asyncpg
import structlog

log = structlog.get_logger(__name__)

_UPSERT_USAGE = """
    INSERT INTO key_usage (key_id, last_used_at)
    SELECT * FROM unnest($1::text[], $2::timestamptz[])
    ON CONFLICT (key_id) DO UPDATE
        SET last_used_at = GREATEST(key_usage.last_used_at, EXCLUDED.last_used_at)
"""
_UPDATE_VIEWS = """
    UPDATE key_views AS v SET last_used_at = u.last_used_at
    FROM unnest($1::text[], $2::timestamptz[]) AS u(key_id, last_used_at)
    WHERE v.key_id = u.key_id AND (v.last_used_at IS NULL OR v.last_used_at < u.last_used_at)
"""


def to_minute(moment: datetime) -> datetime:
    """``moment`` truncated to its minute."""
    return moment.replace(second=0, microsecond=0)


class UsageRecorder:
    """Batches key uses in memory and writes them periodically."""

    def __init__(self, pool: asyncpg.Pool, flush_interval: float = 10.0) -> None:
        self.pool = pool
        self.flush_interval = flush_interval
        self._pending: dict[str, datetime] = {}
        self._has_views: bool | None = None

    def touch(self, key_id: str, now: datetime) -> None:
        """Note a successful use of ``key_id`` at ``now`` (no I/O)."""
        self._pending[key_id] = now

    def report(self, key_id: str, at: datetime) -> None:
        """Note a use of ``key_id`` at ``at`` reported from outside, possibly older than one
        already pending (a batch from a client's own cache): the later of the two is kept."""
        pending = self._pending.get(key_id)
        if pending is None or pending < at:
            self._pending[key_id] = at

    async def flush(self) -> int:
        """Write every pending use; returns how many keys were written."""
        if not self._pending:
            return 0
        pending, self._pending = self._pending, {}
        key_ids = list(pending)
        minutes = [to_minute(pending[key_id]) for key_id in key_ids]
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(_UPSERT_USAGE, key_ids, minutes)
                if self._has_views is None:
                    self._has_views = bool(
                        await conn.fetchval("SELECT to_regclass('key_views') IS NOT NULL")
                    )
                if self._has_views:
                    await conn.execute(_UPDATE_VIEWS, key_ids, minutes)
        except BaseException:
            # Keep the uses for the next flush (newer ones win).
            self._pending = {**pending, **self._pending}
            raise
        return len(key_ids)

    async def run(self) -> None:
        """Flush every ``flush_interval`` seconds until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(self.flush_interval)
                try:
                    await self.flush()
                except (OSError, asyncpg.PostgresError):
                    log.exception("key_usage_flush_failed")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())
