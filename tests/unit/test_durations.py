from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.domain.durations import expiry_from, parse_grace_period

NOW = datetime(2026, 8, 31, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [
        ("never", None),
        ("30d", NOW + timedelta(days=30)),
        ("90d", NOW + timedelta(days=90)),
        ("6mo", datetime(2027, 2, 28, 10, 0, tzinfo=UTC)),
        ("1y", datetime(2027, 8, 31, 10, 0, tzinfo=UTC)),
    ],
)
def test_expires_in(expires_in: str, expected: datetime | None) -> None:
    assert expiry_from(expires_in, NOW) == expected


def test_unknown_expires_in() -> None:
    with pytest.raises(ValueError):
        expiry_from("2w", NOW)


@pytest.mark.parametrize(
    ("text", "seconds"), [("0s", 0), ("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800)]
)
def test_grace_period(text: str, seconds: int) -> None:
    assert parse_grace_period(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["8d", "169h", "-1s", "1w", "", "24", "1.5h"])
def test_bad_grace_period(text: str) -> None:
    with pytest.raises(ValueError):
        parse_grace_period(text)
