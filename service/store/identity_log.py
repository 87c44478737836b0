"""Identities as the log holds them: the latest configuration of each, as of a position.

A cold start from a registry snapshot (``service.verification.feed``) needs
each identity's shared limits as they stood at the snapshot's position (the
log after it is folded as usual); the snapshot holds keys only. Identities
are few and each one's latest event is all that counts, found through the
log's ``(event_type, position)`` index.
"""

from __future__ import annotations

import asyncpg
import structlog

from events.models import IdentityConfigured
from service.store.event_rows import EVENT_ONLY_COLUMNS, logged_event

log = structlog.get_logger(__name__)

_LATEST = f"""
SELECT DISTINCT ON (key_id) {EVENT_ONLY_COLUMNS}
FROM events
WHERE event_type = 'IdentityConfigured' AND position <= $1
ORDER BY key_id, stream_version DESC
"""


async def configured_identities(conn: asyncpg.Connection, upto: int) -> list[IdentityConfigured]:
    """Each identity's latest ``IdentityConfigured`` at or before ``upto``.

    One that does not decode is left out (its identity shares no limits until a
    readable event of it arrives), and logged: one bad row stops no cold start.
    """
    found: list[IdentityConfigured] = []
    for row in await conn.fetch(_LATEST, upto):
        try:
            event = logged_event(row).event
        except Exception as exc:  # whatever a damaged row makes decoding raise
            log.warning("identity_unreadable", position=row["position"], error=type(exc).__name__)
            continue
        if isinstance(event, IdentityConfigured):
            found.append(event)
    return found
