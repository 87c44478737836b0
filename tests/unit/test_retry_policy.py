"""The followers' one retry policy: doubling delays, capped, reset by a success."""

from __future__ import annotations

import pytest

from service.store.log_follower import RetryPolicy


@pytest.mark.parametrize(
    ("policy", "delays"),
    [
        (RetryPolicy(), [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]),
        (RetryPolicy(1.0, 1.0), [1.0, 1.0, 1.0]),
        (RetryPolicy(0.25, 1.0), [0.25, 0.5, 1.0, 1.0]),
    ],
)
def test_delays_double_up_to_the_cap(policy: RetryPolicy, delays: list[float]) -> None:
    backoff = policy.backoff()
    assert [backoff.next() for _ in delays] == pytest.approx(delays)


def test_a_success_starts_over_and_runs_do_not_share_state() -> None:
    policy = RetryPolicy(0.5, 4.0)
    backoff, other = policy.backoff(), policy.backoff()
    for _ in range(3):
        backoff.next()
    assert other.next() == 0.5
    backoff.reset()
    assert backoff.next() == 0.5
