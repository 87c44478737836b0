"""The expiry sweeper: writes ``KeyExpired`` once a key's ``expires_at`` passes.

It runs in every replica. Exactly-once needs no leader: each ``ExpireKey``
runs under the log's append lock and the decider turns a second one into a
no-op.
"""

from __future__ import annotations

import asyncio

import structlog

from events.models import Actor
from service.clock import utc_now
from service.domain.commands import ExpireKey
from service.errors import KeyledgerError
from service.key_commands import KeyCommandHandler

SWEEPER_ACTOR = Actor(id="keyledger:expiry-sweeper")
log = structlog.get_logger(__name__)


class ExpirySweeper:
    """Periodically expires every key that is due."""

    def __init__(self, commands: KeyCommandHandler, interval_seconds: float) -> None:
        self.commands = commands
        self.interval = interval_seconds

    async def sweep_once(self) -> int:
        """Expire every due key now; returns how many ``KeyExpired`` were written."""
        written = 0
        for key_id, org_id in await self.commands.due_for_expiry():
            try:
                outcome = await self.commands.handle(
                    ExpireKey(key_id=key_id, issued_at=utc_now()),
                    org_id=org_id,
                    actor=SWEEPER_ACTOR,
                )
            except KeyledgerError as exc:
                log.warning("expiry_skipped", key_id=key_id, code=exc.code)
                continue
            written += len(outcome.events)
        return written

    async def run(self) -> None:
        """Sweep forever; errors are logged and the next sweep tries again."""
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expiry_sweep_failed")
            await asyncio.sleep(self.interval)
