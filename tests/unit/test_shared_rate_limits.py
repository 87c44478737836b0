"""Named rate limits and how replicas share them, without I/O.

The replicas here are ``RateLimiter``s joined by a simulated NATS subject:
one totally ordered stream of messages, delivered to every subscriber (the
sender included) some steps after it was sent, as on a busy machine.
"""

from __future__ import annotations

import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.models import NamedRateLimit
from service.verification.rate_limits import CountReport, LimitCheck, RateLimiter
from service.verification.shared_limits import decode, encode

PER_SECOND = NamedRateLimit(name="burst", limit=3, window="1s")
PER_MINUTE = NamedRateLimit(name="minute", limit=5, window="1m")


class Clock:
    def __init__(self, now: float = 1000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_every_limit_must_have_room_and_a_refusal_counts_in_none() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limits = (PER_SECOND, PER_MINUTE)
    outcomes = [limiter.take("key_a", limits).retry_after for _ in range(4)]
    assert outcomes[:3] == [None, None, None] and outcomes[3] == 1
    clock.now += 1  # a new second: the per-minute limit still has 2 left
    check = limiter.take("key_a", limits, cost=2)
    assert check.retry_after is None
    assert [(s.name, s.remaining) for s in check.states] == [("burst", 1), ("minute", 0)]
    refused = limiter.take("key_a", limits)
    assert refused.retry_after == 19  # at 1001.25, the minute 960-1020 ends in 18.75 s
    assert [s.remaining for s in refused.states] == [1, 0]
    assert limiter.take("key_b", limits).retry_after is None  # counted per scope


def test_cost_zero_checks_without_counting_and_a_cost_over_the_limit_is_refused() -> None:
    limiter = RateLimiter(clock=Clock())
    assert limiter.take("k", (PER_SECOND,), cost=0).states[0].remaining == 3
    assert limiter.take("k", (PER_SECOND,), cost=4).retry_after == 1
    assert limiter.take("k", (PER_SECOND,), cost=3).retry_after is None
    assert limiter.take("k", (PER_SECOND,), cost=0).retry_after is None  # full, not over


def test_a_changed_window_is_a_new_counter() -> None:
    limiter = RateLimiter(clock=Clock())
    for _ in range(3):
        limiter.take("k", (PER_SECOND,))
    wider = NamedRateLimit(name="burst", limit=3, window="1m")
    assert limiter.take("k", (wider,)).retry_after is None


class Bus:
    """One NATS subject: messages in one order, delivered ``lag`` steps after sending."""

    def __init__(self, replicas: list[RateLimiter], lag: int) -> None:
        self.replicas = replicas
        self.lag = lag
        self.pending: deque[tuple[int, bytes]] = deque()
        self.step = 0

    def publish(self) -> None:
        for limiter in self.replicas:
            reports = limiter.drain()
            if reports:
                self.pending.append((self.step, encode(limiter.replica_id, reports)))

    def deliver(self) -> None:
        self.step += 1
        while self.pending and self.pending[0][0] + self.lag <= self.step:
            _, data = self.pending.popleft()
            decoded = decode(data)
            assert decoded is not None
            for limiter in self.replicas:
                limiter.heard(*decoded)


def sharing_replicas(count: int, clock: Clock) -> list[RateLimiter]:
    replicas = [RateLimiter(clock=clock, replica_id=f"r{i}") for i in range(count)]
    for limiter in replicas:
        limiter.sharing = True
        for other in replicas:
            limiter.heard_from(other.replica_id)
    return replicas


@settings(max_examples=150, deadline=None, database=None)
@given(
    limit=st.integers(1, 300),
    lag=st.integers(0, 40),
    seed=st.integers(0, 2**32),
    requests=st.integers(50, 1500),
)
def test_three_replicas_accept_within_the_bound(
    limit: int, lag: int, seed: int, requests: int
) -> None:
    clock = Clock()
    replicas = sharing_replicas(3, clock)
    bus = Bus(replicas, lag)
    rule = (NamedRateLimit(name="default", limit=limit, window="1m"),)
    rng = random.Random(seed)
    accepted = 0
    for _ in range(requests):
        limiter = rng.choice(replicas)
        check = limiter.take("key", rule)
        if check.retry_after is None:
            accepted += 1
        else:
            assert_refusal_claims_no_room(check)
        if rng.random() < 0.5:
            bus.publish()
        bus.deliver()
    assert accepted <= limit * 1.1 + 3


def assert_refusal_claims_no_room(check: LimitCheck, cost: int = 1) -> None:
    """A refused answer shows some limit without room for ``cost`` (what its headers show)."""
    assert check.retry_after is not None
    assert min(state.remaining for state in check.states) < cost


@settings(max_examples=100, deadline=None, database=None)
@given(
    limit=st.integers(1, 50),
    extra=st.integers(1, 20),
    sharing=st.booleans(),
    echoed_every=st.integers(0, 5),
)
def test_one_replica_alone_enforces_its_limit_exactly(
    limit: int, extra: int, sharing: bool, echoed_every: int
) -> None:
    """However late its own counts come back from NATS (``0``: never), nothing is refused early."""
    limiter = RateLimiter(clock=Clock(), replica_id="me")
    limiter.sharing = sharing
    rule = (NamedRateLimit(name="m", limit=limit, window="1h"),)
    answers = []
    for step in range(limit + extra):
        answers.append(limiter.take("key", rule))
        if echoed_every and step % echoed_every == 0:
            limiter.heard("me", limiter.drain())
    assert [a.retry_after is None for a in answers] == [True] * limit + [False] * extra
    assert [a.states[0].remaining for a in answers[:limit]] == list(range(limit - 1, -1, -1))
    for refused in answers[limit:]:
        assert refused.retry_after is not None and refused.retry_after > 1  # the hour's end
        assert_refusal_claims_no_room(refused)


def test_the_strangers_sequence_ten_of_ten_then_refused() -> None:
    """Issue 14: limit 10, twelve requests in a row, none of them echoed back yet."""
    limiter = RateLimiter(clock=Clock(), replica_id="dev")
    limiter.sharing = True
    limiter.heard_from("dev")  # its own heartbeat: not another replica
    rule = (NamedRateLimit(name="m", limit=10, window="1h"),)
    answers = [limiter.take("key", rule) for _ in range(12)]
    assert [a.retry_after is None for a in answers] == [True] * 10 + [False] * 2
    assert [a.states[0].remaining for a in answers] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0]


def test_a_peer_gone_quiet_no_longer_takes_a_share() -> None:
    ticks = [0.0]
    limiter = RateLimiter(clock=Clock(), replica_id="me", monotonic=lambda: ticks[0])
    limiter.sharing = True
    limiter.heard_from("old")  # a replica that has since stopped
    rule = (NamedRateLimit(name="m", limit=3, window="1m"),)
    first, second = limiter.take("key", rule), limiter.take("key", rule)
    assert first.retry_after is None
    # While "old" may still be there, the second request waits for the first to be heard…
    assert second.retry_after == 1
    assert second.states[0].remaining == 0  # …and says so: no room for this replica now
    assert_refusal_claims_no_room(second)
    ticks[0] = 10.0  # "old" has not been heard for longer than the timeout
    assert [limiter.take("key", rule).retry_after for _ in range(3)][:2] == [None, None]


def test_a_refusal_for_the_share_shows_what_this_replica_may_take() -> None:
    clock = Clock()
    replicas = sharing_replicas(2, clock)
    rule = (NamedRateLimit(name="m", limit=40, window="1h"),)
    # After 6 unheard, 34 left: 34 // (2 × 2) = 8 may go unheard by the other replica.
    answers = [replicas[0].take("key", rule, cost=3) for _ in range(3)]
    assert [a.retry_after for a in answers] == [None, None, 1]
    assert answers[2].states[0].remaining == 2  # 8 - 6 unheard: not enough for 3
    assert_refusal_claims_no_room(answers[2], cost=3)


@pytest.mark.parametrize("limit", [1, 3, 10])
@pytest.mark.parametrize("count", [2, 3])
def test_small_limits_across_replicas(limit: int, count: int) -> None:
    """Small limits: never over ``limit × 1.1 + replicas``; reached exactly when heard at once."""
    clock = Clock()
    # No message arrives: every replica takes what its share allows, blind to the others.
    blind = sharing_replicas(count, clock)
    rule = (NamedRateLimit(name="m", limit=limit, window="1h"),)
    accepted = sum(
        blind[i % count].take("key", rule).retry_after is None for i in range(10 * limit)
    )
    # Each replica takes at least one request (a key is never shut out), the lot stays bounded.
    assert min(limit, count) <= accepted <= limit * 1.1 + count
    # Heard before the next request (one client, one request at a time): exactly the limit.
    prompt = sharing_replicas(count, clock)
    bus = Bus(prompt, lag=0)
    outcomes = []
    for i in range(limit + 3):
        outcomes.append(prompt[i % count].take("key", rule).retry_after is None)
        bus.publish()
        bus.deliver()
    assert outcomes == [True] * limit + [False] * 3


def test_with_prompt_messages_the_replicas_together_reach_the_limit() -> None:
    clock = Clock()
    replicas = sharing_replicas(3, clock)
    bus = Bus(replicas, lag=0)
    rule = (NamedRateLimit(name="default", limit=100, window="1m"),)
    accepted = 0
    for i in range(300):
        if replicas[i % 3].take("key", rule).retry_after is None:
            accepted += 1
        bus.publish()
        bus.deliver()
    assert accepted == 100


def test_one_replica_taking_all_the_traffic_still_reaches_the_limit() -> None:
    clock = Clock()
    replicas = sharing_replicas(3, clock)
    bus = Bus(replicas, lag=0)
    rule = (NamedRateLimit(name="default", limit=50, window="1m"),)
    accepted = 0
    for _ in range(80):
        if replicas[0].take("key", rule).retry_after is None:
            accepted += 1
        bus.publish()
        bus.deliver()
    assert accepted == 50


def test_replicas_not_heard_from_stop_sharing_the_limit() -> None:
    ticks = [0.0]
    limiter = RateLimiter(clock=Clock(), replica_id="me", monotonic=lambda: ticks[0])
    limiter.heard_from("other")
    limiter.heard_from("me")  # its own heartbeat is not a peer
    assert limiter.replicas() == 2
    ticks[0] = 10.0
    assert limiter.replicas() == 1


def test_counts_of_a_window_that_is_over_are_ignored_and_repeats_do_no_harm() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock, replica_id="me")
    now_window = int(clock.now // 60)
    stale: list[CountReport] = [("key", "default", 60, now_window - 1, 50)]
    current: list[CountReport] = [("key", "default", 60, now_window, 4)]
    limiter.heard("other", stale)
    limiter.heard("other", current)
    limiter.heard("other", current)  # a repeat
    limiter.heard("other", [("key", "default", 60, now_window, 2)])  # older news
    rule = (NamedRateLimit(name="default", limit=5, window="1m"),)
    assert limiter.take("key", rule).states[0].remaining == 0
    assert limiter.take("key", rule).retry_after is not None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"r": 1, "c": []}',
        b'{"r": "x", "c": [["k", "n", 60, 1]]}',
        b'{"r": "x", "c": [["k", "n", 0, 1, 1]]}',
        b'{"r": "x", "c": [["k", "n", 60, -1, 1]]}',
        b'{"r": "x", "c": [["k", "n", 60, 1, true]]}',
        b'{"r": "x", "c": [["k", "n", 60, 1, 1.5]]}',
        b"[" * 100_000,
    ],
)
def test_malformed_messages_are_ignored(data: bytes) -> None:
    assert decode(data) is None


def test_messages_round_trip() -> None:
    reports: list[CountReport] = [("key_1", "default", 60, 7, 3)]
    assert decode(encode("r1", reports)) == ("r1", reports)


def test_a_key_and_its_identity_are_counted_together_or_not_at_all() -> None:
    limiter = RateLimiter(clock=Clock())
    shared = ("idn_customer", (PER_MINUTE,))
    own = (PER_SECOND,)
    # Two keys of one identity: each has its own per-second limit, and share the minute's 5.
    taken = [limiter.take(key, own, shared=shared).retry_after for key in ("a", "b", "a", "b")]
    assert taken == [None] * 4
    check = limiter.take("a", own, shared=shared)
    assert check.retry_after is None
    assert [(s.name, s.remaining) for s in check.states] == [("burst", 0), ("minute", 0)]
    refused = limiter.take("b", own, shared=shared)  # b's own limit has room; the identity's not
    assert refused.retry_after is not None
    assert [(s.name, s.remaining) for s in refused.states] == [("burst", 1), ("minute", 0)]
    # Refused by its own limit, a request is not counted in the identity's either.
    other = RateLimiter(clock=Clock())
    for _ in range(3):
        other.take("a", own, shared=shared)
    assert other.take("a", own, shared=shared).retry_after == 1
    assert other.take("b", own, cost=0, shared=shared).states[1].remaining == 2  # a look
