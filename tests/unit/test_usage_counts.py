"""Usage analytics in memory: counts per key, minute and code; windows of a query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import KeyledgerError
from service.usage_analytics import (
    GRANULARITIES,
    MAX_BUCKETS,
    Granularity,
    UsageCounts,
    UsageWindow,
)

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


def test_windows_near_year_one_start_at_its_first_instant() -> None:
    # The default ``since`` would fall before year 1: it starts at year 1 instead.
    for granularity, until in (
        ("day", datetime(1, 1, 1, 5, tzinfo=UTC)),
        ("minute", datetime(1, 1, 1, 0, 5, tzinfo=UTC)),
        ("hour", datetime(1, 1, 1, 2, tzinfo=UTC)),
    ):
        window = UsageWindow.of(granularity, None, until, T0)
        assert window.since == datetime.min.replace(tzinfo=UTC)
        assert window.buckets()[0] == window.since and window.buckets()[-1] == window.until


def test_windows_within_one_bucket_still_refuse_since_after_until() -> None:
    with pytest.raises(KeyledgerError, match="since is after until"):
        UsageWindow.of("hour", T0.replace(minute=30), T0.replace(minute=10), T0)


WINDOW_INSTANTS = st.datetimes(
    min_value=datetime.min,
    max_value=datetime.max,
    timezones=st.just(UTC),
)


@settings(max_examples=300, deadline=None)
@given(
    granularity=st.sampled_from(GRANULARITIES),
    since=st.none() | WINDOW_INSTANTS,
    until=st.none() | WINDOW_INSTANTS,
    now=WINDOW_INSTANTS,
)
def test_every_window_is_bounded_or_refused(
    granularity: Granularity, since: datetime | None, until: datetime | None, now: datetime
) -> None:
    """Any range in years 1-9999: a bounded list of buckets, or 422 ``invalid_time_range``."""
    try:
        window = UsageWindow.of(granularity, since, until, now)
    except KeyledgerError as exc:
        assert exc.code == "invalid_time_range"
        return
    buckets = window.buckets()
    assert 1 <= len(buckets) <= MAX_BUCKETS
    assert buckets == sorted(set(buckets))
    assert all(bucket <= window.end() for bucket in buckets)
    assert since is None or buckets[0] <= since
    assert buckets[-1] <= (until or now)
