"""Events this replica committed, handed to its outbox relay as they commit.

The relay publishes the log in position order, reading it after its
checkpoint. The events this replica commits are the next positions most of
the time, and it has them already as envelopes: reading them back and
decoding them again was a large share of the relay's work per event. So the
command handler hands each commit's events over (a commit observer), and the
relay takes them from here when they continue exactly what it has published;
anything else (another replica's events between, a relay that fell behind,
NATS away for a while) it reads from the log as before, which stays the
source of truth.
"""

from __future__ import annotations

from collections.abc import Sequence

from events.models import Envelope


class HandedOver:
    """Committed envelopes in position order, at most ``limit`` kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._envelopes: list[Envelope] = []

    def add(self, committed: Sequence[Envelope], *, leading: bool) -> None:
        """Keep ``committed`` (one commit's events, in order) for a relay that ``leading``.

        A relay that does not lead publishes nothing, and one that does not keep up
        reads from the log: in either case nothing is kept (no unbounded growth).
        """
        if not leading or len(self._envelopes) >= self.limit:
            self._envelopes.clear()
        if leading:
            self._envelopes.extend(committed)

    def take(self, *, after: int, limit: int) -> list[Envelope]:
        """The kept events at ``after + 1``, ``after + 2``… (up to ``limit``, no gap),
        removed from here; empty when the next position kept is not ``after + 1``."""
        kept = self._envelopes
        stale = 0
        while stale < len(kept) and kept[stale].position <= after:
            stale += 1
        del kept[:stale]
        taken: list[Envelope] = []
        for envelope in kept[:limit]:
            if envelope.position != after + 1 + len(taken):
                break
            taken.append(envelope)
        if taken:
            del kept[: len(taken)]
        else:
            kept.clear()
        return taken
