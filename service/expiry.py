"""The sweeper: writes ``KeyExpired`` once a key's ``expires_at`` passes, and
``KeyCreditsRefilled`` once a key's next credit refill period begins.

It runs in every replica. Exactly-once needs no leader: each ``ExpireKey`` and
``RefillCredits`` runs under the log's append lock and the decider turns a
second one (for the same key and period) into a no-op.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from events.models import Actor
from service.clock import utc_now
from service.domain.commands import Command, ExpireKey, RefillCredits
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
        return await self._issue(await self.commands.due_for_expiry(), ExpireKey, "expiry")

    async def refill_once(self) -> int:
        """Refill every key whose refill period began; how many ``KeyCreditsRefilled``."""
        return await self._issue(await self.commands.due_for_refill(), RefillCredits, "refill")

    async def _issue(
        self, due: list[tuple[str, str]], command: Callable[..., Command], what: str
    ) -> int:
        written = 0
        for key_id, org_id in due:
            try:
                outcome = await self.commands.handle(
                    command(key_id=key_id, issued_at=utc_now()), org_id=org_id, actor=SWEEPER_ACTOR
                )
            except KeyledgerError as exc:
                log.warning(f"{what}_skipped", key_id=key_id, code=exc.code)
                continue
            written += len(outcome.events)
        return written

    async def run(self) -> None:
        """Sweep forever; errors are logged and the next sweep tries again."""
        while True:
            try:
                await self.sweep_once()
                await self.refill_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expiry_sweep_failed")
            await asyncio.sleep(self.interval)
