"""The head against its witnesses, and the chain check of a tail to re-append (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from events.codec import GENESIS_HASH, envelope_to_json, seal
from events.models import Actor, Envelope, KeyRenamed
from service.store.audit_chain import ChainReport
from service.store.log_repair import RepairRefused, check_continues
from service.store.log_witnesses import (
    Witness,
    WitnessReport,
    audit_json,
    published_position,
    witnesses_not_held,
)

H = {1: "a" * 64, 2: "b" * 64, 3: "c" * 64}


def test_a_head_ahead_of_every_witness_is_normal_lag() -> None:
    witnesses = [Witness("projection:key_views", 1), Witness("jetstream:S", 2, H[2])]
    assert witnesses_not_held(3, H, witnesses) == ()


def test_a_head_equal_to_the_witness_with_its_hash_holds_it() -> None:
    assert witnesses_not_held(3, H, [Witness("jetstream:S", 3, H[3])]) == ()


@pytest.mark.parametrize(
    "witness",
    [
        Witness("projection:key_views", 4),
        Witness("outbox_checkpoint:S", 10),
        Witness("verification_index", 4),
        Witness("jetstream:S", 4, "d" * 64),
        # Same position, another event: the lost one was replaced.
        Witness("jetstream:S", 3, "e" * 64),
        # A lower position whose event differs: the tail was cut and appended anew.
        Witness("jetstream:S", 2, "e" * 64),
    ],
)
def test_a_witness_the_log_does_not_hold_is_missing(witness: Witness) -> None:
    held = Witness("projection:key_views", 2)
    assert witnesses_not_held(3, H, [held, witness]) == (witness,)


def test_an_empty_log_with_a_witness_is_truncated() -> None:
    assert witnesses_not_held(0, {}, [Witness("outbox_checkpoint:S", 1)])


def _report(missing: tuple[Witness, ...]) -> WitnessReport:
    witnesses = (Witness("projection:key_views", 2), *missing)
    return WitnessReport(head=3, head_hash=H[3], witnesses=witnesses, missing=missing)


def test_the_description_names_the_furthest_missing_witness() -> None:
    report = _report((Witness("projection:key_views", 4), Witness("jetstream:S", 6, "d" * 64)))
    assert report.truncated
    assert report.describe() == (
        "log_truncated: the log head is position 3, but jetstream:S saw position 6"
    )
    replaced = _report((Witness("jetstream:S", 3, "e" * 64),))
    assert "jetstream:S saw another event at position 3" in replaced.describe()


def test_audit_json_fails_on_a_truncated_log_even_with_an_intact_chain() -> None:
    chain = ChainReport(ok=True, events=3)
    truncated = audit_json(chain, _report((Witness("projection:key_views", 4),)))
    assert truncated["ok"] is False and truncated["log_truncated"] is True
    assert truncated["reason"].startswith("log_truncated:")
    assert [w["held"] for w in truncated["witnesses"]] == [True, False]
    intact = audit_json(chain, _report(()))
    assert intact["ok"] is True and "reason" not in intact
    broken = ChainReport(ok=False, events=1, broken_at=2, reason="event 2 is missing")
    both = audit_json(broken, _report((Witness("projection:key_views", 4),)))
    assert both["reason"] == "event 2 is missing" and both["log_truncated"] is True


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"position": "3", "hash": "x"}',
        b'{"position": true, "hash": "x"}',
        b'{"position": 3}',
        b'{"position": 3.0, "hash": "x"}',
        ("[" * 100_000 + "]" * 100_000).encode(),
    ],
)
def test_a_message_without_position_and_hash_is_no_witness(payload: bytes) -> None:
    assert published_position(payload) is None


def test_a_published_envelope_witnesses_its_position_and_hash() -> None:
    payload = json.dumps({"position": 7, "hash": "f" * 64, "data": {"deep": [[[]]]}}).encode()
    assert published_position(payload) == (7, "f" * 64)


def _chain(length: int) -> list[Envelope]:
    envelopes, previous = [], GENESIS_HASH
    for position in range(1, length + 1):
        event = KeyRenamed(
            key_id="key_01HZZZZZZZZZZZZZZZZZZZZZZZ",
            org_id="acme",
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
            name=f"n{position}",
            previous_name="?",
        )
        envelope = seal(
            event,
            event_id=uuid4(),
            stream_version=position,
            position=position,
            actor=Actor(id="t"),
            previous_hash=previous,
        )
        envelopes.append(envelope)
        previous = envelope.hash
    return envelopes


def test_a_tail_that_continues_the_chain_is_accepted() -> None:
    log = _chain(5)
    check_continues(2, log[1].hash, log[2:])
    check_continues(5, log[4].hash, [])
    # What JetStream carries decodes to the same envelope, hash and all.
    from events.codec import envelope_from_json

    check_continues(2, log[1].hash, [envelope_from_json(envelope_to_json(e)) for e in log[2:]])


@pytest.mark.parametrize(
    ("head", "tail_positions", "message"),
    [
        (2, [4, 5], "expected position 3"),  # a hole
        (2, [3, 5], "expected position 4"),
        (1, [3, 4], "expected position 2"),
    ],
)
def test_a_tail_with_a_hole_is_refused(head: int, tail_positions: list[int], message: str) -> None:
    log = _chain(5)
    with pytest.raises(RepairRefused, match=message):
        check_continues(head, log[head - 1].hash, [log[p - 1] for p in tail_positions])


def test_a_tail_that_does_not_chain_from_the_head_is_refused() -> None:
    log, other = _chain(4), _chain(4)
    with pytest.raises(RepairRefused, match="position 3 does not continue"):
        check_continues(2, other[1].hash, log[2:])
    edited = log[3].model_copy(update={"data": {**log[3].data, "name": "evil"}})
    with pytest.raises(RepairRefused, match="position 4 does not continue"):
        check_continues(2, log[1].hash, [log[2], edited])
