"""``last_used_at`` and usage analytics: recorded without slowing verification.

A successful verification only sets ``pending[key_id] = minute`` in memory
(and every verification of a known key adds one to its minute and code in
``service.usage_analytics.UsageCounts``). A background task flushes both
every few seconds, in one transaction: ``key_usage`` (migration 0030) and,
when the ``key_views`` projection exists, its ``last_used_at`` column, then
the analytics counts. ``last_used_at`` only moves forward (``GREATEST``) and
counts add up, so replicas flushing in any order agree.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import asyncpg
import structlog

from service.clock import utc_now
from service.usage_analytics import PRUNE_EVERY, UsageCounts, prune, write_counts

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

    def __init__(
        self,
        pool: asyncpg.Pool,
        flush_interval: float = 10.0,
        counts: UsageCounts | None = None,
        retention_days: int = 90,
    ) -> None:
        self.pool = pool
        self.flush_interval = flush_interval
        self._pending: dict[str, datetime] = {}
        self._has_views: bool | None = None
        # Analytics: verifications per key, minute and code (None: not kept).
        self.counts = counts if counts is not None else UsageCounts(enabled=False)
        self.retention = timedelta(days=retention_days)
        # One flush at a time: a flush that returns has written everything noted before it
        # (the periodic one may have taken the pending uses a moment earlier).
        self._flushing = asyncio.Lock()
        self._pruned_at: datetime | None = None

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
        """Write every pending use and count; returns how many keys' last use was written."""
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> int:
        counts = self.counts.take()
        if not self._pending and not counts:
            return 0
        pending, self._pending = self._pending, {}
        key_ids = list(pending)
        minutes = [to_minute(pending[key_id]) for key_id in key_ids]
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                if key_ids:
                    await conn.execute(_UPSERT_USAGE, key_ids, minutes)
                    if not self._has_views:  # until the projection has made its table
                        self._has_views = bool(
                            await conn.fetchval("SELECT to_regclass('key_views') IS NOT NULL")
                        )
                    if self._has_views:
                        await conn.execute(_UPDATE_VIEWS, key_ids, minutes)
                if counts:
                    await write_counts(conn, counts)
        except BaseException:
            # Keep the uses for the next flush (newer ones win) and the counts (they add up).
            self._pending = {**pending, **self._pending}
            self.counts.give_back(counts)
            raise
        return len(key_ids)

    async def prune_if_due(self) -> None:
        """Delete analytics older than the retention, at most once per ``PRUNE_EVERY``."""
        now = utc_now()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        async with self.pool.acquire() as conn:
            await prune(conn, now - self.retention)
        self._pruned_at = now

    async def run(self) -> None:
        """Flush every ``flush_interval`` seconds until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(self.flush_interval)
                try:
                    await self.flush()
                    await self.prune_if_due()
                except (OSError, asyncpg.PostgresError):
                    log.exception("key_usage_flush_failed")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())
