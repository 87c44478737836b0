"""The guard's in-memory verdict: what the verify hot path reads (no I/O here)."""

from __future__ import annotations

from typing import Any

import pytest

from service.errors import KeyledgerError
from service.store.log_witnesses import Witness, WitnessReport
from service.truncation_guard import TruncationGuard


def report(*missing: Witness) -> WitnessReport:
    held = Witness("projection:key_views", 1)
    return WitnessReport(
        head=3, head_hash="a" * 64, witnesses=(held, *missing), missing=tuple(missing)
    )


def guard() -> TruncationGuard:
    pool: Any = object()  # never touched: only the recorded verdict is exercised
    return TruncationGuard(pool)


def test_an_intact_log_lets_everything_through() -> None:
    watched = guard()
    watched._record(report())
    watched.require_intact()
    assert watched.truncation is None


@pytest.mark.parametrize(
    "missing",
    [Witness("projection:key_views", 4), Witness("jetstream:S", 3, "b" * 64)],
)
def test_a_truncated_log_is_refused_until_it_holds_every_witness_again(missing: Witness) -> None:
    watched = guard()
    watched._record(report(missing))
    with pytest.raises(KeyledgerError) as refused:
        watched.require_intact()
    assert refused.value.code == "log_truncated"
    assert refused.value.details == {"head": 3}
    # Later checks that still find it missing keep refusing; a repaired log clears it.
    watched._record(report(missing))
    with pytest.raises(KeyledgerError):
        watched.require_intact()
    watched._record(report())
    watched.require_intact()
