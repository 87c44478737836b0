"""The sweeper: ``KeyExpiringSoon`` ahead of ``expires_at``, ``KeyExpired`` after, and
``KeyCreditsRefilled`` once a key's next credit refill period begins.

It runs in every replica. Exactly-once needs no leader: each ``ExpireKey``, ``WarnExpiry``
and ``RefillCredits`` runs under the log's append lock and the decider turns a second one
into a no-op (a warning is once per key, lead and ``expires_at``; a refill once per period).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from events.models import Actor
from service.clock import utc_now
from service.domain.commands import Command, ExpireKey, RefillCredits, WarnExpiry
from service.errors import KeyledgerError
from service.key_commands import KeyCommandHandler

SWEEPER_ACTOR = Actor(id="keyledger:expiry-sweeper")
log = structlog.get_logger(__name__)


class ExpirySweeper:
    """Periodically expires every key that is due."""

    def __init__(
        self,
        commands: KeyCommandHandler,
        interval_seconds: float,
        lead_times: tuple[tuple[str, timedelta], ...] = (),
    ) -> None:
        self.commands = commands
        self.interval = interval_seconds
        # (text, duration), longest first: the expiry warnings to write.
        self.lead_times = lead_times
        # (key_id, lead, expires_at) already decided here (written or a no-op): not asked again.
        self._decided: set[tuple[str, str, datetime]] = set()

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

    async def warn_once(self) -> int:
        """Write every expiry warning that is due; returns how many were written."""
        if not self.lead_times:
            return 0
        written = 0
        now = utc_now()
        self._decided = {entry for entry in self._decided if entry[2] > now}
        due = await self.commands.due_for_warning(self.lead_times[0][1])
        for key_id, org_id, expires_at, logged in due:
            warned = _warned(logged)
            now = utc_now()
            for lead, lead_time in self.lead_times:
                decided = (key_id, lead, expires_at)
                if (
                    now < expires_at - lead_time
                    or (lead, expires_at) in warned
                    or decided in self._decided
                ):
                    continue
                try:
                    outcome = await self.commands.handle(
                        WarnExpiry(key_id=key_id, lead=lead, lead_time=lead_time, issued_at=now),
                        org_id=org_id,
                        actor=SWEEPER_ACTOR,
                    )
                except KeyledgerError as exc:
                    log.warning("expiry_warning_skipped", key_id=key_id, code=exc.code)
                    break
                self._decided.add(decided)
                written += len(outcome.events)
        return written

    async def run(self) -> None:
        """Sweep forever; errors are logged and the next sweep tries again."""
        while True:
            try:
                await self.sweep_once()
                await self.refill_once()
                await self.warn_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expiry_sweep_failed")
            await asyncio.sleep(self.interval)


def _warned(logged: set[tuple[str, str]]) -> set[tuple[str, datetime]]:
    """(lead, expires_at) of logged warnings; a row whose instant does not parse is left out
    (the decider, which folds the key's events, still refuses to warn twice)."""
    warned = set()
    for lead, instant in logged:
        try:
            warned.add((lead, datetime.fromisoformat(instant)))
        except (TypeError, ValueError):
            continue
    return warned
