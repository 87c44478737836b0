"""The live event fan-out: per-org delivery, a slow watcher dropped alone, no secret hashes."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from events import GENESIS_HASH, Actor, KeyRevoked, envelope_body, seal
from events.models import Envelope
from service.errors import KeyledgerError
from service.event_stream import EventFanout, public_envelope
from service.http.event_stream_routes import last_event_id
from service.http.schemas import GenerateKeyBody
from tests.support.hostile import generated, sealed

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def revoked(org_id: str, position: int) -> Envelope:
    event = KeyRevoked(key_id="key_x", org_id=org_id, occurred_at=AT, reason="leaked")
    return seal(
        event,
        event_id=uuid4(),
        stream_version=2,
        position=position,
        actor=Actor(id="key_admin"),
        previous_hash=GENESIS_HASH,
    )


async def test_each_watcher_gets_its_orgs_events_in_order() -> None:
    fanout = EventFanout(capacity=10)
    acme, other = fanout.watch("acme"), fanout.watch("other")
    for position, org in enumerate(["acme", "other", "acme"], start=1):
        fanout.publish(revoked(org, position))
    assert [(await acme.next(1)).position, (await acme.next(1)).position] == [1, 3]  # type: ignore[union-attr]
    assert (await other.next(1)).position == 2  # type: ignore[union-attr]


async def test_a_slow_watcher_is_dropped_and_the_others_still_receive() -> None:
    fanout = EventFanout(capacity=2)
    slow, quick = fanout.watch("acme"), fanout.watch("acme")
    for position in range(1, 4):
        fanout.publish(revoked("acme", position))
        envelope = await quick.next(1)
        assert envelope is not None and envelope.position == position
    assert slow.closed_because == "slow"
    assert await slow.next(1) is None  # its backlog is dropped whole: it resumes by position
    assert fanout.dropped == 1 and len(fanout) == 1
    fanout.publish(revoked("acme", 4))
    assert (await quick.next(1)).position == 4  # type: ignore[union-attr]


async def test_closing_all_ends_each_watcher_after_what_it_has() -> None:
    fanout = EventFanout(capacity=2)
    watcher = fanout.watch("acme")
    fanout.publish(revoked("acme", 1))
    fanout.close_all()
    assert (await watcher.next(1)).position == 1  # type: ignore[union-attr]
    assert await watcher.next(1) is None and watcher.closed_because == "shutdown"
    assert len(fanout) == 0


async def test_a_full_watcher_closed_for_shutdown_drops_its_backlog_whole() -> None:
    fanout = EventFanout(capacity=1)
    watcher = fanout.watch("acme")
    fanout.publish(revoked("acme", 1))
    fanout.close_all()
    assert await watcher.next(1) is None


async def test_forgotten_watchers_receive_nothing() -> None:
    fanout = EventFanout(capacity=2)
    watcher = fanout.watch("acme")
    fanout.forget(watcher)
    fanout.publish(revoked("acme", 1))
    assert len(fanout) == 0 and await watcher.next(1) is None


def test_public_envelopes_carry_no_secret_hash() -> None:
    envelope = sealed(generated("acme", GenerateKeyBody(name="n", type="secret"))[0])
    assert envelope_body(envelope)["data"]["secret_hash"]  # the log keeps it
    body = public_envelope(envelope)
    assert "secret_hash" not in body["data"]
    assert body["data"]["hint"].startswith("sk_live_")
    assert body["position"] == envelope.position and body["org_id"] == "acme"


@given(
    st.text(
        # Real header values hold no surrogates (they could not be sent as bytes).
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"),
        max_size=40,
    )
)
def test_any_last_event_id_is_a_position_or_a_400(value: str) -> None:
    request = make_mocked_request("GET", "/", headers={"Last-Event-ID": value})
    try:
        position = last_event_id(request)
    except KeyledgerError as refusal:
        assert refusal.code == "invalid_header"
        return
    if value.strip():
        assert position == int(value.strip()) and 0 <= position < 2**63
    else:
        assert position is None
