"""A replica's guard against serving from a truncated log (docs/security.md §6).

At start, every ``witness_check_interval_seconds`` and on every ``/readyz``,
the guard compares the log head with its witnesses
(``service.store.log_witnesses``). While the log is truncated it keeps the
report in memory: verification and commands check that one attribute (no
database round trip on the hot path) and refuse with 503 ``log_truncated``,
because a revocation that was cut off the log would otherwise verify
``VALID`` again, and a new event would take the position of a lost one and
make the tail impossible to re-append. The guard clears itself once the log
holds every witness again (``keyledger audit repair``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

import asyncpg
import nats
import structlog
from nats.aio.client import Client as NatsClient

from events.servers import nats_servers
from service.errors import KeyledgerError
from service.store.log_witnesses import (
    LOG_TRUNCATED,
    Witness,
    WitnessReport,
    jetstream_witness,
    read_witness_report,
)

log = structlog.get_logger(__name__)

# A witness that does not answer this fast is skipped for this check, not waited for.
JETSTREAM_TIMEOUT_SECONDS = 1.0
# At start, how long to wait for NATS so that the first check has JetStream's witness
# (after a restored backup it is the only one); NATS down only delays the start this much.
STARTUP_NATS_WAIT_SECONDS = 2.0


class TruncationGuard:
    """Knows whether the log this replica serves from still holds every witness."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        nats_url: str | None = None,
        nats_stream: str = "KEYLEDGER",
        interval_seconds: float = 5.0,
        in_memory: Callable[[], Iterable[Witness]] = tuple,
    ) -> None:
        self.pool = pool
        self.nats_url = nats_url
        self.nats_stream = nats_stream
        self.interval_seconds = interval_seconds
        # Witnesses this process holds itself (e.g. its verification index's position).
        self.in_memory = in_memory
        # The report while the log is truncated; None while it holds every witness.
        self.truncation: WitnessReport | None = None
        self._nc: NatsClient | None = None
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> WitnessReport:
        """Check once now (loudly when truncated), then keep checking in the background."""
        if self.nats_url:
            # A cluster is a comma-separated list: nats-py needs it split (events.servers).
            servers = nats_servers(self.nats_url)
            self._tasks.append(asyncio.create_task(self._connect(servers), name="witness-nats"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), STARTUP_NATS_WAIT_SECONDS)
        report = await self.check()
        self._tasks.append(asyncio.create_task(self._watch(), name="witness-watch"))
        return report

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    def require_intact(self) -> None:
        """Raise 503 ``log_truncated`` while the log is truncated (in memory, no I/O)."""
        if self.truncation is not None:
            raise KeyledgerError(
                LOG_TRUNCATED,
                "the event log is missing events its witnesses saw; this replica refuses to"
                " answer from it until `keyledger audit repair` restores them",
                {"head": self.truncation.head},
            )

    def require_head_reaches(self, head: int) -> None:
        """Raise 503 ``log_truncated`` when this process saw the log past ``head``.

        Called by the command writer with the head it read under the append
        lock, before it appends: a log cut a moment ago (before the next check)
        must not get a new event at the position of a lost one, which would
        make the lost tail impossible to re-append. In memory, no I/O.
        """
        seen = max((witness.position for witness in self.in_memory()), default=0)
        if head < seen:
            raise KeyledgerError(
                LOG_TRUNCATED,
                "the event log is missing events this replica has seen; it refuses to"
                " append until `keyledger audit repair` restores them",
                {"head": head, "seen": seen},
            )

    async def check(self) -> WitnessReport:
        """Compare the head with every witness now; update (and log) the guard's state."""
        outside = list(self.in_memory())
        unchecked: list[str] = []
        if self.nats_url:
            witness, problem = await self._jetstream_witness()
            if witness is not None:
                outside.append(witness)
            if problem is not None:
                unchecked.append(problem)
        report = await read_witness_report(self.pool, outside, unchecked)
        self._record(report)
        return report

    def _record(self, report: WitnessReport) -> None:
        if report.truncated:
            if self.truncation is None:
                log.critical(
                    LOG_TRUNCATED,
                    message=report.describe(),
                    head=report.head,
                    missing=[(w.source, w.position) for w in report.missing],
                    remedy="keyledger audit repair",
                )
            self.truncation = report
        elif self.truncation is not None:
            log.warning("log_truncation_cleared", head=report.head)
            self.truncation = None

    async def _jetstream_witness(self) -> tuple[Witness | None, str | None]:
        if self._nc is None or not self._nc.is_connected:
            return None, "jetstream: not connected"
        try:
            async with asyncio.timeout(JETSTREAM_TIMEOUT_SECONDS):
                return await jetstream_witness(self._nc.jetstream(), self.nats_stream), None
        except Exception as exc:
            return None, f"jetstream: {type(exc).__name__}"

    async def _connect(self, servers: list[str]) -> None:
        async def connected() -> None:
            await self._check_quietly()

        async def error(exc: Exception) -> None:
            log.debug("witness_nats_error", error=repr(exc))

        # Retries forever in the background; checks go on from the checkpoints meanwhile.
        self._nc = await nats.connect(
            servers=servers,
            name="keyledger-witness",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            reconnected_cb=connected,
            error_cb=error,
        )
        self._connected.set()
        await self._check_quietly()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            await self._check_quietly()

    async def _check_quietly(self) -> None:
        try:
            await self.check()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The database is down: readiness reports that; the last verdict stands.
            log.warning("witness_check_failed", error=repr(exc))
