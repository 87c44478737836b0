"""Refill periods of a key's credits: which period an instant falls in, when the next begins.

A daily refill's periods are UTC days (``2026-11-30``); a monthly refill on
``day`` d (1-28, default 1) has periods that begin on the d-th of each month
at 00:00 UTC and are named by that month (``2026-11``). Pure.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events.models import CreditRefill


def period_of(refill: CreditRefill, at: datetime) -> str:
    """The name of the refill period ``at`` falls in."""
    moment = at.astimezone(UTC)
    if refill.interval == "daily":
        return moment.date().isoformat()
    year, month = moment.year, moment.month
    if moment.day < (refill.day or 1):
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return f"{year:04d}-{month:02d}"


def next_period_start(refill: CreditRefill, at: datetime) -> datetime:
    """When the period after the one ``at`` falls in begins."""
    moment = at.astimezone(UTC)
    if refill.interval == "daily":
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)
    year, month = (int(part) for part in period_of(refill, at).split("-"))
    year, month = (year, month + 1) if month < 12 else (year + 1, 1)
    return datetime(year, month, refill.day or 1, tzinfo=UTC)
