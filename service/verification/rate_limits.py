"""Named rate limits, counted in memory and shared between replicas.

A key (or an identity, for the limits its keys share) has up to five named
limits, each ``limit`` per fixed window (``floor(now / length)``). A request
of ``cost`` passes when every limit has room for it; then it is counted in
every one, else in none, and the first full one says when to retry.

Across replicas (``service.verification.shared_limits`` carries the counts
over NATS) each replica counts its own requests exactly and hears the others'
totals a moment later. Hearing late is what lets N replicas together accept
more than the limit, so a replica runs ahead of what the others have heard
from it only by a share of what remains: a request is taken while

    (counted here, not yet confirmed) + cost <= max(cost, remaining / (2 × replicas))

where *confirmed* is the count this replica has seen come back from NATS (the
others hear a subject's messages in the same order, so by then they know it
too) and *remaining* is the limit minus every count known here. What the
others have counted but this replica not yet heard is at most their own
shares; halving the share keeps all of that within what truly remains. Near
the limit the share shrinks to one request in flight per replica: accepted
requests stay within about ``limit + replicas``. A request refused for the
share (``retry_after`` 1) shows as its limit's ``remaining`` what this replica
may still take now (less than ``cost``), never room the refusal contradicts.

A replica that hears no other (*replicas* is 1: no heartbeat from another
within ``PEER_TIMEOUT_SECONDS``) takes no share at all: nobody else counts
against the limit, so what it has not yet heard back changes nothing and the
limit is exact. Without NATS a replica also counts alone (each replica
enforces the whole limit).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable
from typing import NamedTuple

from events.models import NamedRateLimit
from events.vocabulary import RATE_WINDOW_SECONDS

_PRUNE_EVERY = 10_000
# A replica not heard from for this long no longer counts as sharing the limits.
PEER_TIMEOUT_SECONDS = 3.0

# (scope, limit name, window length in seconds): one counter per window of it.
CounterKey = tuple[str, str, int]
# An identity's scope (its stream id) and the limits its keys share.
Shared = tuple[str, tuple[NamedRateLimit, ...]]
# What replicas tell each other: (scope, name, length, window number, count).
CountReport = tuple[str, str, int, int, int]


class LimitState(NamedTuple):
    """One limit as a verify answer shows it."""

    name: str
    limit: int
    remaining: int
    reset_at: float  # unix seconds: the end of the current window


class LimitCheck(NamedTuple):
    """The outcome of ``RateLimiter.take``: refused with ``retry_after`` seconds, or not."""

    retry_after: int | None
    states: tuple[LimitState, ...]


class _Counter:
    __slots__ = ("confirmed", "mine", "others", "others_total", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.mine = 0  # requests this replica took in the window
        self.confirmed = 0  # of those, how many it has heard back from NATS
        self.others: dict[str, int] = {}  # replica id -> its count in the window
        self.others_total = 0


class RateLimiter:
    """Counts requests per scope and named limit in fixed windows."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        replica_id: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self.replica_id = replica_id or uuid.uuid4().hex
        self._counters: dict[CounterKey, _Counter] = {}
        self._since_prune = 0
        # Counters taken since the last ``drain``; ``on_taken`` wakes whoever publishes them.
        self._dirty: set[CounterKey] = set()
        self.on_taken: Callable[[], None] | None = None
        # True while counts are shared (NATS connected); replica id -> last heard (monotonic).
        self.sharing = False
        self._peers: dict[str, float] = {}

    # -- the hot path ---------------------------------------------------------

    def take(
        self,
        scope: str,
        limits: Iterable[NamedRateLimit],
        cost: int = 1,
        shared: Shared | None = None,
    ) -> LimitCheck:
        """Count a request of ``cost`` against every limit of ``scope`` (and of ``shared``,
        the identity whose limits the key shares), or refuse it and count it nowhere."""
        rules = [(scope, rule) for rule in limits]
        if shared is not None:
            rules += [(shared[0], rule) for rule in shared[1]]
        now = self._clock()
        # Alone (no other replica heard lately), nobody else can take from the limit: what
        # this replica has not yet heard back from NATS needs no share, the count is exact.
        replicas = self.replicas() if self.sharing else 1
        counted: list[tuple[_Counter, CounterKey]] = []
        states: list[LimitState] = []
        retry_after: int | None = None
        for rule_scope, rule in rules:
            length = RATE_WINDOW_SECONDS[rule.window]
            window = int(now // length)
            key = (rule_scope, rule.name, length)
            counter = self._counter(key, window, now)
            known = counter.mine + counter.others_total
            remaining = rule.limit - known
            if retry_after is None:
                if known + cost > rule.limit:
                    retry_after = max(1, math.ceil((window + 1) * length - now))
                elif replicas > 1:
                    ahead = counter.mine - counter.confirmed
                    share = max(cost, remaining // (2 * replicas))
                    if ahead + cost > share:
                        # Room is left, but not for this replica until the others hear it:
                        # the answer says what this replica may grant now (less than cost).
                        retry_after = 1
                        remaining = share - ahead
            counted.append((counter, key))
            states.append(LimitState(rule.name, rule.limit, remaining, (window + 1) * length))
        if retry_after is not None or cost == 0:
            return LimitCheck(retry_after, tuple(_floored(states)))
        for counter, key in counted:
            counter.mine += cost
            self._dirty.add(key)
        if self.on_taken is not None:
            self.on_taken()
        return LimitCheck(
            None, tuple(_floored(s._replace(remaining=s.remaining - cost) for s in states))
        )

    def _counter(self, key: CounterKey, window: int, now: float) -> _Counter:
        counter = self._counters.get(key)
        if counter is None or counter.window != window:
            counter = self._counters[key] = _Counter(window)
            self._maybe_prune(now)
        return counter

    # -- sharing (service.verification.shared_limits) ------------------------------

    def replicas(self) -> int:
        """Replicas sharing the limits: this one and those heard from lately."""
        cutoff = self._monotonic() - PEER_TIMEOUT_SECONDS
        return 1 + sum(1 for heard in self._peers.values() if heard >= cutoff)

    def drain(self) -> list[CountReport]:
        """This replica's counts taken since the last drain, to tell the others."""
        reports = []
        for key in self._dirty:
            counter = self._counters.get(key)
            if counter is not None:
                reports.append((*key, counter.window, counter.mine))
        self._dirty.clear()
        return reports

    def heard(self, replica_id: str, reports: Iterable[CountReport]) -> None:
        """Counts a replica (this one included, its own coming back) told everyone."""
        own = replica_id == self.replica_id
        if not own:
            self._peers[replica_id] = self._monotonic()
        now = self._clock()
        for scope, name, length, window, count in reports:
            key = (scope, name, length)
            counter = self._counters.get(key)
            if counter is None or counter.window < window:
                if window != int(now // length):
                    continue  # a window that is over (or not begun here): nothing to limit
                counter = self._counter(key, window, now)
            elif counter.window != window:
                continue
            if own:
                counter.confirmed = max(counter.confirmed, min(count, counter.mine))
            elif count > counter.others.get(replica_id, 0):
                counter.others_total += count - counter.others.get(replica_id, 0)
                counter.others[replica_id] = count

    def heard_from(self, replica_id: str) -> None:
        """A replica said it is there (a heartbeat)."""
        if replica_id != self.replica_id:
            self._peers[replica_id] = self._monotonic()

    def _maybe_prune(self, now: float) -> None:
        self._since_prune += 1
        if self._since_prune < _PRUNE_EVERY:
            return
        self._since_prune = 0
        self._counters = {
            key: counter
            for key, counter in self._counters.items()
            if counter.window == int(now // key[2])
        }

    def __len__(self) -> int:
        return len(self._counters)


def _floored(states: Iterable[LimitState]) -> Iterable[LimitState]:
    return (s if s.remaining >= 0 else s._replace(remaining=0) for s in states)
