"""Per-key usage analytics: verifications counted per minute and verdict code.

Counting is a dict increment on the verify path (``UsageCounts.count``);
``UsageRecorder`` flushes the counts with ``last_used_at``, in one statement,
to ``key_usage_minutes`` — a table outside the event log: counts are not
facts about a key's lifecycle, and must not grow the log or its hash chain.
Replicas add their own counts (``count = count + excluded.count``). Rows older
than the retention are deleted at most once an hour by each replica.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg

from service.errors import KeyledgerError

Granularity = Literal["minute", "hour", "day"]
GRANULARITIES: tuple[Granularity, ...] = ("minute", "hour", "day")
STEP: dict[Granularity, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
# How far back a query reaches when ``since`` is not given.
DEFAULT_SPAN: dict[Granularity, timedelta] = {
    "minute": timedelta(hours=1),
    "hour": timedelta(days=1),
    "day": timedelta(days=30),
}
MAX_BUCKETS = 10_080  # a week of minutes
PRUNE_EVERY = timedelta(hours=1)

_UPSERT_COUNTS = """
    INSERT INTO key_usage_minutes (key_id, minute, code, count)
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[])
    ON CONFLICT (key_id, minute, code) DO UPDATE
        SET count = key_usage_minutes.count + EXCLUDED.count
"""
# The buckets themselves are listed in Python (``UsageWindow.buckets``): a
# ``generate_series`` over the window ran unbounded when a bound was year 1's
# first instant, which asyncpg sends as ``-infinity``. This query only sums the
# minutes that exist; ``$2``/``$3`` may be ``-infinity``/``infinity``, which
# still bound the range correctly.
_COUNTS = """
    SELECT date_trunc($4, minute, 'UTC') AS t,
           sum(count) FILTER (WHERE code = 'VALID')::bigint AS valid,
           sum(count) FILTER (WHERE code = 'RATE_LIMITED')::bigint AS rate_limited,
           sum(count) FILTER (WHERE code = 'USAGE_EXCEEDED')::bigint AS usage_exceeded,
           sum(count) FILTER (
               WHERE code NOT IN ('VALID', 'RATE_LIMITED', 'USAGE_EXCEEDED')
           )::bigint AS denied
    FROM key_usage_minutes
    WHERE key_id = $1 AND minute >= $2 AND minute < $3
    GROUP BY 1
"""
COUNTED = ("valid", "rate_limited", "usage_exceeded", "denied")
FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)
LAST_INSTANT = datetime.max.replace(tzinfo=UTC)

# (key_id, minute, code) → verifications.
Counts = dict[tuple[str, datetime, str], int]


class UsageCounts:
    """Verifications per key, minute and code, in memory until flushed."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.pending: Counts = {}
        # The current minute, kept so that most calls skip building a new datetime.
        self._minute = datetime.min.replace(tzinfo=UTC)
        self._minute_end = self._minute

    def count(self, key_id: str, code: str, now: datetime) -> None:
        """Note one verification of ``key_id`` answered ``code`` at ``now`` (no I/O)."""
        if not self.enabled:
            return
        if not self._minute <= now < self._minute_end:
            self._minute = now.replace(second=0, microsecond=0)
            self._minute_end = self._minute + timedelta(minutes=1)
        slot = (key_id, self._minute, code)
        pending = self.pending
        pending[slot] = pending.get(slot, 0) + 1

    def take(self) -> Counts:
        """The counts so far, leaving none pending."""
        taken, self.pending = self.pending, {}
        return taken

    def give_back(self, counts: Counts) -> None:
        """Put counts that could not be written back, to go with the next flush."""
        for slot, number in counts.items():
            self.pending[slot] = self.pending.get(slot, 0) + number


async def write_counts(conn: asyncpg.Connection, counts: Counts) -> None:
    """Add ``counts`` to ``key_usage_minutes``."""
    slots = list(counts)
    await conn.execute(
        _UPSERT_COUNTS,
        [slot[0] for slot in slots],
        [slot[1] for slot in slots],
        [slot[2] for slot in slots],
        [counts[slot] for slot in slots],
    )


async def prune(conn: asyncpg.Connection, before: datetime) -> None:
    """Delete the counts of minutes before ``before`` (the retention)."""
    await conn.execute("DELETE FROM key_usage_minutes WHERE minute < $1", before)


@dataclass(frozen=True, slots=True)
class UsageWindow:
    """What a usage query covers: buckets of ``granularity`` from ``since`` to ``until``."""

    granularity: Granularity
    since: datetime
    until: datetime

    @classmethod
    def of(
        cls,
        granularity: Granularity,
        since: datetime | None,
        until: datetime | None,
        now: datetime,
    ) -> UsageWindow:
        """The window a query asks for, with defaults; 422 ``invalid_time_range`` if too big.

        Computed in Python, bounded before any query: a default ``since``
        before year 1 starts at year 1's first instant.
        """
        if since is not None and since > (until or now):
            # Compared before rounding: 10:30 to 10:10 is backwards, same hour or not.
            raise KeyledgerError("invalid_time_range", "since is after until")
        end = _floor(until or now, granularity)
        if since is not None:
            start = _floor(since, granularity)
        else:
            try:
                start = end - DEFAULT_SPAN[granularity]
            except OverflowError:
                start = FIRST_INSTANT
        if (end - start) // STEP[granularity] + 1 > MAX_BUCKETS:
            raise KeyledgerError(
                "invalid_time_range",
                f"at most {MAX_BUCKETS} {granularity}s per query; narrow since/until",
            )
        return cls(granularity, start, end)

    def buckets(self) -> list[datetime]:
        """The start of every bucket, ``since`` to ``until`` inclusive (≤ ``MAX_BUCKETS``)."""
        step = STEP[self.granularity]
        count = (self.until - self.since) // step + 1
        return [self.since + step * index for index in range(count)]

    def end(self) -> datetime:
        """Where the last bucket ends (exclusive), or the last instant of year 9999."""
        try:
            return self.until + STEP[self.granularity]
        except OverflowError:
            return LAST_INSTANT


def _floor(moment: datetime, granularity: Granularity) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    if granularity in ("hour", "day"):
        moment = moment.replace(minute=0)
    if granularity == "day":
        moment = moment.replace(hour=0)
    return moment


class UsageReader:
    """Reads the analytics of one key."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def series(self, org_id: str, key_id: str, window: UsageWindow) -> list[dict[str, Any]]:
        """The key's verifications per bucket, every bucket of the window (zeros included)."""
        return await _series(self.pool, org_id, key_id, window)


async def _series(
    pool: asyncpg.Pool, org_id: str, key_id: str, window: UsageWindow
) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        owner = await conn.fetchval("SELECT org_id FROM key_registry WHERE key_id = $1", key_id)
        if owner != org_id:
            raise KeyledgerError("key_not_found", "no such key")
        rows = await conn.fetch(_COUNTS, key_id, window.since, window.end(), window.granularity)
    return usage_series(window, {row["t"]: row for row in rows})


def usage_series(
    window: UsageWindow, counted: Mapping[datetime, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Every bucket of ``window`` with its counts (zeros where nothing was counted)."""
    series = []
    for bucket in window.buckets():
        row = counted.get(bucket)
        point: dict[str, Any] = {"t": bucket.isoformat().replace("+00:00", "Z")}
        for name in COUNTED:
            point[name] = (row[name] or 0) if row is not None else 0
        series.append(point)
    return series
