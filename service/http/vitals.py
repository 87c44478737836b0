"""How far this replica is behind the log: the one reading behind ``/readyz`` and ``/metrics``.

Every lag is measured against the log head read from PostgreSQL at that
moment (not against what a component last heard of), so a component that
stopped hearing anything still shows as behind.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from service.http.context import POOL, SETTINGS, TRUNCATION_GUARD
from service.http.outbox_side import RELAY
from service.http.read_side import PROJECTIONS
from service.http.verify_routes import VERIFICATION_INDEX
from service.store.event_store import EventStore
from service.store.outbox_checkpoint import read_checkpoint
from service.store.quarantine import QuarantinedKey, QuarantineLog

# A readiness probe must answer quickly even when PostgreSQL does not.
DATABASE_TIMEOUT_SECONDS = 2.0
# How many quarantined keys /readyz names (all are counted in /metrics).
QUARANTINES_NAMED = 20
_store = EventStore()
_quarantine = QuarantineLog()


@dataclass(frozen=True, slots=True)
class Vitals:
    """One reading of the replica's state; ``None`` means unknown or not configured."""

    database_ok: bool
    log_head: int | None
    nats_configured: bool
    nats_connected: bool | None
    relay_problem: str | None
    outbox_lag: int | None
    index_keys: int | None
    index_position: int | None
    projection_positions: dict[str, int] = field(default_factory=dict)
    projection_failures: dict[str, str] = field(default_factory=dict)
    # One line naming the missing witness when the log is truncated (SPEC §10).
    log_truncated: str | None = None
    # Keys set aside per consumer (SPEC §10), and the first few of them by position.
    quarantine_counts: dict[str, int] = field(default_factory=dict)
    quarantined: list[QuarantinedKey] = field(default_factory=list)
    # Evidence that the log itself is damaged (a truncated head, …): this replica
    # would answer wrongly, so each one makes /readyz 503.
    integrity_problems: list[str] = field(default_factory=list)

    @property
    def index_lag(self) -> int | None:
        """Events committed but not yet in this replica's verification index."""
        if self.log_head is None or self.index_position is None:
            return None
        return max(0, self.log_head - self.index_position)

    def projection_lags(self) -> dict[str, int]:
        """Events committed but not yet applied, per projection (when the head is known)."""
        if self.log_head is None:
            return {}
        head = self.log_head
        return {name: max(0, head - pos) for name, pos in self.projection_positions.items()}


@dataclass(frozen=True, slots=True)
class _DatabaseReading:
    head: int
    outbox_lag: int | None
    quarantine_counts: dict[str, int]
    quarantined: list[QuarantinedKey]


async def _read_database(pool: asyncpg.Pool, stream: str, with_outbox: bool) -> _DatabaseReading:
    async with pool.acquire() as conn:
        head = await _store.head(conn)
        counts, first = await _quarantine.overview(conn, named=QUARANTINES_NAMED)
        outbox_lag = None
        if with_outbox:
            outbox_lag = max(0, head - await read_checkpoint(conn, stream))
    return _DatabaseReading(head, outbox_lag, counts, first)


async def read_vitals(app: web.Application) -> Vitals:
    """Read the database head and every component's position, never raising."""
    settings = app[SETTINGS]
    relay = app.get(RELAY)
    runner = app.get(PROJECTIONS)
    index = app.get(VERIFICATION_INDEX)
    pool = app.get(POOL)
    reading: _DatabaseReading | None = None
    if pool is not None:
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS):
                reading = await _read_database(
                    pool, settings.nats_stream, with_outbox=relay is not None
                )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            reading = None
    guard = app.get(TRUNCATION_GUARD)
    if guard is not None and reading is not None:
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS):
                await guard.check()  # fresh: a probe sees a truncation at once
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            reading = None
    truncation = guard.truncation if guard is not None else None
    projection_positions: dict[str, int] = {}
    projection_failures: dict[str, str] = {}
    if runner is not None:
        projection_positions = {name: runner.position(name) for name in runner.lag()}
        projection_failures = runner.failures()
    return Vitals(
        database_ok=reading is not None,
        log_head=reading.head if reading else None,
        nats_configured=bool(settings.nats_url),
        nats_connected=relay.nats_connected if relay is not None else None,
        relay_problem=relay.problem if relay is not None else None,
        outbox_lag=reading.outbox_lag if reading else None,
        index_keys=len(index) if index is not None else None,
        index_position=index.position if index is not None else None,
        projection_positions=projection_positions,
        projection_failures=projection_failures,
        log_truncated=truncation.describe() if truncation is not None else None,
        quarantine_counts=reading.quarantine_counts if reading else {},
        quarantined=reading.quarantined if reading else [],
    )
