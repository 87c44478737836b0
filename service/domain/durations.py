"""The durations of the API: ``expires_in`` and ``grace_period``."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from events.vocabulary import EXPIRES_IN_CHOICES, ExpiresIn

_DURATION = re.compile(r"\A([0-9]{1,7})(s|m|h|d)\Z")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_GRACE = timedelta(days=7)


def expiry_from(expires_in: ExpiresIn, now: datetime) -> datetime | None:
    """When a key created ``now`` with ``expires_in`` expires (None for never)."""
    if expires_in == "never":
        return None
    if expires_in == "6mo":
        return _add_months(now, 6)
    if expires_in == "1y":
        return _add_months(now, 12)
    days = {"30d": 30, "90d": 90}.get(expires_in)
    if days is None:
        raise ValueError(f"expires_in must be one of {', '.join(EXPIRES_IN_CHOICES)}")
    return now + timedelta(days=days)


def _add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    # Clamp the day: 31 August + 6 months is the last day of February.
    for day in range(moment.day, 27, -1):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return moment.replace(year=year, month=month, day=min(moment.day, 28))


def parse_grace_period(value: object) -> timedelta:
    """``0s``…``7d`` in s, m, h or d units; anything else (a non-string too) is a ValueError."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError("grace_period must look like 30s, 15m, 24h or 7d")
    period = timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
    if period > MAX_GRACE:
        raise ValueError("grace_period must be at most 7d")
    return period


MAX_LEAD_TIME = timedelta(days=365)


def parse_lead_times(value: str) -> tuple[tuple[str, timedelta], ...]:
    """``"7d,1d"`` as ((``"7d"``, 7 days), (``"1d"``, 1 day)), longest first; ``"none"``: ().

    Each lead is 1s–365d in s, m, h or d units; anything else is a ValueError.
    """
    if value.strip().lower() == "none":
        return ()
    leads: dict[str, timedelta] = {}
    for part in value.split(","):
        text = part.strip()
        match = _DURATION.fullmatch(text)
        if not match:
            raise ValueError("lead times look like 7d,1d,12h (or none)")
        lead = timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
        if not timedelta(0) < lead <= MAX_LEAD_TIME:
            raise ValueError("each lead time is from 1s to 365d")
        leads[text] = lead
    return tuple(sorted(leads.items(), key=lambda item: item[1], reverse=True))
