"""How far this replica is behind the log: the one reading behind ``/readyz`` and ``/metrics``.

Every lag is measured against the log head read from PostgreSQL at that
moment (not against what a component last heard of), so a component that
stopped hearing anything still shows as behind.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg

from projections.runner import ProjectionRunner
from service.outbox.relay import OutboxRelay
from service.store.event_store import EventStore
from service.store.quarantine import QuarantinedKey, QuarantineLog
from service.truncation_guard import TruncationGuard
from service.verification.index import VerificationIndex

# A readiness probe must answer quickly even when PostgreSQL does not.
DATABASE_TIMEOUT_SECONDS = 2.0
# How many quarantined keys /readyz names (all are counted in /metrics).
QUARANTINES_NAMED = 20
_UNREADABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


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
    # One line naming the missing witness when the log is truncated (docs/security.md §6).
    log_truncated: str | None = None
    # Keys set aside per consumer (docs/security.md §5), and the first few of them by position.
    quarantine_counts: dict[str, int] = field(default_factory=dict)
    quarantined: list[QuarantinedKey] = field(default_factory=list)
    # Evidence that the log itself is damaged (a truncated head, …): this replica
    # would answer wrongly, so each one makes /readyz 503.
    integrity_problems: list[str] = field(default_factory=list)

    @classmethod
    def not_running(cls, *, nats_configured: bool) -> Vitals:
        """The reading of a replica whose service has not started (or has stopped)."""
        return cls(
            database_ok=False,
            log_head=None,
            nats_configured=nats_configured,
            nats_connected=None,
            relay_problem=None,
            outbox_lag=None,
            index_keys=None,
            index_position=None,
        )

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


class VitalsReader:
    """Reads the log head and every component's position, never raising."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        index: VerificationIndex,
        projections: ProjectionRunner,
        guard: TruncationGuard,
        relay: OutboxRelay | None,
    ) -> None:
        self.pool = pool
        self.index = index
        self.projections = projections
        self.guard = guard
        self.relay = relay
        self.store = EventStore()
        self.quarantine = QuarantineLog()

    async def _read_database(self) -> _DatabaseReading:
        async with self.pool.acquire() as conn:
            head = await self.store.head(conn)
            counts, first = await self.quarantine.overview(conn, named=QUARANTINES_NAMED)
            outbox_lag = None
            if self.relay is not None:
                outbox_lag = max(0, await self.relay.lag(conn))
        return _DatabaseReading(head, outbox_lag, counts, first)

    async def read(self) -> Vitals:
        """One reading; what cannot be read in time is reported as unknown."""
        reading: _DatabaseReading | None = None
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS):
                reading = await self._read_database()
            async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS):
                await self.guard.check()  # fresh: a probe sees a truncation at once
        except _UNREADABLE:
            reading = None
        truncation = self.guard.truncation
        runner, relay, index = self.projections, self.relay, self.index
        return Vitals(
            database_ok=reading is not None,
            log_head=reading.head if reading else None,
            nats_configured=relay is not None,
            nats_connected=relay.nats_connected if relay is not None else None,
            relay_problem=relay.problem if relay is not None else None,
            outbox_lag=reading.outbox_lag if reading else None,
            index_keys=len(index),
            # Not loaded yet (a snapshot and the log after it): no position to be ready at.
            index_position=index.position if index.loaded else None,
            projection_positions={name: runner.position(name) for name in runner.lag()},
            projection_failures=runner.failures(),
            log_truncated=truncation.describe() if truncation is not None else None,
            quarantine_counts=reading.quarantine_counts if reading else {},
            quarantined=reading.quarantined if reading else [],
        )
