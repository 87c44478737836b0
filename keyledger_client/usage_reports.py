"""The uses a ``LocalVerifier`` answered from its cache, reported in batches to keyledger
(``POST /v1/usage``), so each key's ``last_used_at`` moves as if keyledger had seen them."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from keyledger_client.calls import MAX_USES_PER_REPORT
from keyledger_client.client import KeyledgerClient

log = logging.getLogger(__name__)


class UsageReports:
    """The latest cached use of each key since the last report, and the reports."""

    def __init__(self, client: KeyledgerClient, interval: float) -> None:
        self.client = client
        self.interval = interval
        self._uses: dict[str, datetime] = {}

    def note(self, key_id: str) -> None:
        """A verify of ``key_id`` was answered from the cache, now."""
        self._uses[key_id] = datetime.now(UTC)

    async def flush(self) -> int:
        """Report the uses noted since the last report; how many keys."""
        if not self._uses:
            return 0
        uses, self._uses = self._uses, {}
        batch = list(uses.items())
        try:
            while batch:
                await self.client.report_usage(dict(batch[:MAX_USES_PER_REPORT]))
                del batch[:MAX_USES_PER_REPORT]
        except BaseException:
            for key_id, at in batch:  # keep what was not reported for the next report
                self._uses.setdefault(key_id, at)
            raise
        return len(uses)

    async def run(self) -> None:
        """Report every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception as exc:  # the next report carries these uses
                log.warning(
                    "keyledger_verifier_usage_report_failed: %s: %s",
                    type(exc).__name__,
                    exc,
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )
