"""Live events for people watching an org: one fan-out per replica, a bounded queue per watcher.

The verification index applies every event of the log once, in position
order, whichever way it arrived (this replica's own commits, JetStream,
the PostgreSQL catch-up). ``EventFanout.publish`` is called for each one it
applies and hands it to every watcher of that event's org: the database is
never polled per watcher.

Each watcher has a bounded queue. A watcher that falls behind (its queue
full: a slow or stalled client) is dropped, never waited for, so one slow
reader costs the others nothing; it may reconnect and resume from the last
position it received (``Watcher.closed_because`` says why it ended).

What leaves here is safe to show a person: ``public_envelope`` removes the
secret hashes (``data.secret_hash``) that the log keeps, useless as they are
without the pepper.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from events.codec import envelope_body
from events.models import Envelope

# Fields of an event's data that stay in the log and never go to a watcher.
WITHHELD_DATA_FIELDS = frozenset({"secret_hash"})


def public_envelope(envelope: Envelope) -> dict[str, Any]:
    """An envelope as a watcher sees it: the log's envelope without secret hashes."""
    body = envelope_body(envelope)
    data = body.get("data")
    if isinstance(data, dict):
        body["data"] = {k: v for k, v in data.items() if k not in WITHHELD_DATA_FIELDS}
    return body


class Watcher:
    """One client's subscription to one org's events."""

    def __init__(self, org_id: str, capacity: int) -> None:
        self.org_id = org_id
        self._queue: asyncio.Queue[Envelope | None] = asyncio.Queue(capacity)
        # None while open; "slow", "shutdown" once the fan-out has let it go.
        self.closed_because: str | None = None

    def offer(self, envelope: Envelope) -> bool:
        """Queue ``envelope``; False (and closed) when the queue is full."""
        if self.closed_because is not None:
            return False
        try:
            self._queue.put_nowait(envelope)
        except asyncio.QueueFull:
            self.close("slow")
            return False
        return True

    def close(self, reason: str) -> None:
        """End the subscription: ``next`` answers None once the queue is drained."""
        if self.closed_because is not None:
            return
        self.closed_because = reason
        if reason == "slow" or self._queue.full():
            # The backlog is dropped whole, never in part: the client resumes after the
            # last position it received, so it misses nothing.
            while not self._queue.empty():
                self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def next(self, within: float) -> Envelope | None:
        """The next event; raises TimeoutError after ``within`` seconds; None once closed."""
        return await asyncio.wait_for(self._queue.get(), within)


class EventFanout:
    """Hands each applied event to the watchers of its org."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._by_org: dict[str, set[Watcher]] = {}
        # Watchers dropped for being slow, since start (a metric for operators).
        self.dropped = 0

    def __len__(self) -> int:
        return sum(len(watchers) for watchers in self._by_org.values())

    def watch(self, org_id: str) -> Watcher:
        """A new watcher of ``org_id``'s events, receiving from now on."""
        watcher = Watcher(org_id, self.capacity)
        self._by_org.setdefault(org_id, set()).add(watcher)
        return watcher

    def forget(self, watcher: Watcher) -> None:
        """Stop delivering to ``watcher`` (its client went away)."""
        watchers = self._by_org.get(watcher.org_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._by_org[watcher.org_id]
        watcher.close("gone")

    def publish(self, envelope: Envelope) -> None:
        """Offer ``envelope`` to its org's watchers; a full watcher is dropped."""
        watchers = self._by_org.get(envelope.org_id)
        if not watchers:
            return
        for watcher in list(watchers):
            if not watcher.offer(envelope):
                self.dropped += 1
                watchers.discard(watcher)
        if not watchers:
            self._by_org.pop(envelope.org_id, None)

    def close_all(self, reason: str = "shutdown") -> None:
        """End every subscription (the replica is stopping)."""
        for watcher in list(self._all()):
            watcher.close(reason)
        self._by_org.clear()

    def _all(self) -> Iterator[Watcher]:
        for watchers in self._by_org.values():
            yield from watchers
