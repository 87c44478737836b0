"""Usage analytics in memory: counts per key, minute and code; windows of a query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.errors import KeyledgerError
from service.usage_analytics import UsageCounts, UsageWindow

T0 = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
MINUTE = T0.replace(second=0)


def test_counts_go_to_their_minute_and_code() -> None:
    counts = UsageCounts()
    for at in (T0, T0 + timedelta(seconds=20), T0 + timedelta(seconds=40)):
        counts.count("key_a", "VALID", at)
    counts.count("key_a", "RATE_LIMITED", T0)
    counts.count("key_b", "VALID", T0 - timedelta(minutes=5))  # a clock going back is fine
    assert counts.take() == {
        ("key_a", MINUTE, "VALID"): 2,
        ("key_a", MINUTE + timedelta(minutes=1), "VALID"): 1,
        ("key_a", MINUTE, "RATE_LIMITED"): 1,
        ("key_b", MINUTE - timedelta(minutes=5), "VALID"): 1,
    }
    assert counts.take() == {}


def test_counts_not_written_are_given_back_and_add_up() -> None:
    counts = UsageCounts()
    counts.count("key_a", "VALID", T0)
    taken = counts.take()
    counts.count("key_a", "VALID", T0)
    counts.give_back(taken)
    assert counts.take() == {("key_a", MINUTE, "VALID"): 2}


def test_disabled_counts_nothing() -> None:
    counts = UsageCounts(enabled=False)
    counts.count("key_a", "VALID", T0)
    assert counts.take() == {}


def test_windows_default_cap_and_floor() -> None:
    window = UsageWindow.of("hour", None, None, T0)
    assert (window.since, window.until) == (
        T0.replace(minute=0, second=0) - timedelta(days=1),
        T0.replace(minute=0, second=0),
    )
    other_zone = datetime(2026, 1, 2, 1, 30, tzinfo=UTC).astimezone()
    assert UsageWindow.of("day", other_zone, other_zone, T0).since == datetime(
        2026, 1, 2, tzinfo=UTC
    )
    with pytest.raises(KeyledgerError, match="since is after until"):
        UsageWindow.of("minute", T0, T0 - timedelta(hours=1), T0)
    with pytest.raises(KeyledgerError, match="at most"):
        UsageWindow.of("minute", T0 - timedelta(days=8), T0, T0)
