"""Events this replica committed, handed to its followers of the log as they commit.

The outbox relay and the projections read the log in position order after
their checkpoint. The events this replica commits are the next positions
most of the time, and it has them already as envelopes: reading them back
and decoding the rows again was a large share of their work per event. So
the command handler hands each commit's events over (a commit observer), and
a follower takes them from here when they continue exactly its checkpoint;
anything else (another replica's events between, a follower that fell
behind, NATS away for a while) it reads from the log as before, which stays
the source of truth.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.store.event_rows import Committed, LoggedEvent, UnreadableEvent
from service.store.quarantine import is_transient


class HandedOver:
    """Committed events in position order, at most ``limit`` kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._envelopes: list[Committed] = []

    def add(self, committed: Sequence[Committed], *, leading: bool) -> None:
        """Keep ``committed`` (one commit's events, in order) for a relay that ``leading``.

        A relay that does not lead publishes nothing, and one that does not keep up
        reads from the log: in either case nothing is kept (no unbounded growth).
        """
        if not leading or len(self._envelopes) >= self.limit:
            self._envelopes.clear()
        if leading:
            self._envelopes.extend(committed)

    def take(self, *, after: int, limit: int) -> list[Committed]:
        """The kept events at ``after + 1``, ``after + 2``… (up to ``limit``, no gap),
        removed from here; empty when the next position kept is not ``after + 1``."""
        kept = self._envelopes
        stale = 0
        while stale < len(kept) and kept[stale].position <= after:
            stale += 1
        del kept[:stale]
        taken: list[Committed] = []
        for envelope in kept[:limit]:
            if envelope.position != after + 1 + len(taken):
                break
            taken.append(envelope)
        if taken:
            del kept[: len(taken)]
        else:
            kept.clear()
        return taken


def logged_events(committed: Sequence[Committed]) -> list[LoggedEvent | UnreadableEvent]:
    """What ``EventStore.read_events_after`` gives for these rows, made from their envelopes
    and the events their writer decoded (an event that does not decode is an
    ``UnreadableEvent`` in its place, as there)."""
    logged: list[LoggedEvent | UnreadableEvent] = []
    for item in committed:
        envelope = item.envelope
        try:
            logged.append(LoggedEvent(envelope.position, item.decoded()))
        except Exception as exc:
            if is_transient(exc):
                raise
            logged.append(
                UnreadableEvent(
                    envelope.position,
                    envelope.key_id,
                    envelope.org_id,
                    envelope.event_type,
                    exc,
                    envelope.stream_version,
                )
            )
    return logged
