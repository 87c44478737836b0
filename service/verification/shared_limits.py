"""Rate limit counts shared between replicas over NATS (core, not JetStream).

Every replica publishes its own counts (cumulative per window, so a lost or
repeated message does no harm) on one subject, coalesced: whatever was
counted since the last message goes in the next one, gathered for a couple
of milliseconds. Every replica subscribes to the same subject and hands
what it hears to its ``RateLimiter``, its own messages included: they confirm
that the others have heard them (``service.verification.rate_limits``). A
heartbeat each second says which replicas share the limits.

Nothing here is on the request path: ``RateLimiter.take`` stays in memory.
While NATS is unreachable, each replica counts alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog

from events.servers import nats_servers
from service.verification.rate_limits import CountReport, RateLimiter

log = structlog.get_logger(__name__)

HEARTBEAT_SECONDS = 1.0
# Counts taken within this long go out in one message: one message per request would cost
# more than the counting (the others' confirmations wait that much longer, no more).
GATHER_SECONDS = 0.002
RECONNECT_SECONDS = 1.0
# Reports per message: keeps a message well under NATS's default 1 MB payload limit.
_MAX_REPORTS = 2000


def encode(replica_id: str, reports: list[CountReport]) -> bytes:
    """A message of counts (or, without reports, a heartbeat)."""
    return json.dumps({"r": replica_id, "c": reports}, separators=(",", ":")).encode()


def decode(data: bytes) -> tuple[str, list[CountReport]] | None:
    """The replica id and counts of a message; None for anything malformed."""
    try:
        message: Any = json.loads(data)
        replica_id, raw = message["r"], message["c"]
        if not isinstance(replica_id, str) or not isinstance(raw, list):
            return None
        reports: list[CountReport] = []
        for item in raw:
            scope, name, length, window, count = item
            if not (
                isinstance(scope, str)
                and isinstance(name, str)
                and all(type(n) is int and n >= 0 for n in (length, window, count))
                and length > 0
            ):
                return None
            reports.append((scope, name, length, window, count))
        return replica_id, reports
    except (ValueError, TypeError, KeyError, RecursionError):
        return None


class SharedLimits:
    """Publishes this replica's counts and feeds the others' to its limiter."""

    def __init__(self, limiter: RateLimiter, nats_url: str, subject: str) -> None:
        self.limiter = limiter
        self.nats_url = nats_url
        self.subject = subject
        self._taken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Connect and share in the background (never waits for NATS)."""
        self.limiter.on_taken = self._taken.set
        self._task = asyncio.create_task(self._run(), name="shared-rate-limits")

    async def stop(self) -> None:
        """Stop sharing; the limiter counts alone from now on."""
        self.limiter.on_taken = None
        self.limiter.sharing = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        import nats

        said_unavailable = False
        while True:
            client = None
            try:
                client = await nats.connect(
                    servers=nats_servers(self.nats_url),
                    max_reconnect_attempts=-1,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                )
                await client.subscribe(self.subject, cb=self._heard)
                self.limiter.sharing = True
                if said_unavailable:
                    log.info("shared_rate_limits_connected")
                    said_unavailable = False
                await asyncio.gather(self._publish(client), self._heartbeat(client))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not said_unavailable:
                    log.info("shared_rate_limits_unavailable", error=type(exc).__name__)
                    said_unavailable = True
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                self.limiter.sharing = False
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.close()

    async def _disconnected(self) -> None:
        self.limiter.sharing = False

    async def _reconnected(self) -> None:
        self.limiter.sharing = True

    async def _publish(self, client: Any) -> None:
        while True:
            await self._taken.wait()
            await asyncio.sleep(GATHER_SECONDS)
            self._taken.clear()
            reports = self.limiter.drain()
            for start in range(0, len(reports), _MAX_REPORTS):
                chunk = reports[start : start + _MAX_REPORTS]
                await client.publish(self.subject, encode(self.limiter.replica_id, chunk))

    async def _heartbeat(self, client: Any) -> None:
        while True:
            await client.publish(self.subject, encode(self.limiter.replica_id, []))
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _heard(self, msg: Any) -> None:
        decoded = decode(msg.data)
        if decoded is None:
            return  # not ours to understand: one bad message stops nothing
        replica_id, reports = decoded
        if reports:
            self.limiter.heard(replica_id, reports)
        else:
            self.limiter.heard_from(replica_id)
