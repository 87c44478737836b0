"""Webhook signatures, URL checks, the backoff schedule and sealed secrets: pure logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given
from hypothesis import strategies as st

from events.webhooks import signature, signature_header, verify_signature
from service.errors import KeyledgerError
from service.webhooks.attempts import Backoff
from service.webhooks.endpoints import SecretSeal, is_webhook_id, new_webhook_id
from service.webhooks.receivers import checked_url

SECRET = "whsec_test"
NOW = 1_700_000_000


def test_a_signature_is_stripe_like_and_verifies() -> None:
    body = b'{"event_type":"KeyRevoked"}'
    header = signature_header(SECRET, body, NOW)
    assert header == f"t={NOW},v1={signature(SECRET, body, NOW)}"
    assert verify_signature(SECRET, body, header, now=NOW + 10)
    # Several v1 entries: any one may match (a secret being changed).
    both = f"t={NOW},v1=00,v1={signature(SECRET, body, NOW)}"
    assert verify_signature(SECRET, body, both, now=NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b + b" "),
        lambda h, b: (h.replace(f"t={NOW}", f"t={NOW + 1}"), b),
        lambda h, b: (h[:-1] + ("0" if h[-1] != "0" else "1"), b),
        lambda h, b: (h.split(",")[0], b),
        lambda h, b: ("", b),
    ],
)
def test_a_tampered_delivery_does_not_verify(tamper) -> None:  # type: ignore[no-untyped-def]
    body = b"{}"
    header, sent = tamper(signature_header(SECRET, body, NOW), body)
    assert not verify_signature(SECRET, sent, header, now=NOW)


def test_an_old_signature_is_refused() -> None:
    header = signature_header(SECRET, b"{}", NOW)
    assert not verify_signature(SECRET, b"{}", header, now=NOW + 301)
    assert not verify_signature("whsec_other", b"{}", header, now=NOW)


@given(header=st.text(max_size=300) | st.none(), body=st.binary(max_size=64))
def test_any_header_is_a_yes_or_no(header: str | None, body: bytes) -> None:
    assert verify_signature(SECRET, body, header, now=NOW) in (True, False)


@given(url=st.text(max_size=120))
def test_any_url_is_accepted_or_refused_with_its_code(url: str) -> None:
    try:
        accepted = checked_url(url, allow_private=False)
    except KeyledgerError as exc:
        assert exc.code == "invalid_webhook_url"
        return
    assert accepted.startswith(("http://", "https://"))


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/", "http://localhost:8000/h", "http://10.1.2.3/", "http://[::1]:80/"]
)
def test_private_receivers_are_a_setting(url: str) -> None:
    with pytest.raises(KeyledgerError):
        checked_url(url, allow_private=False)
    assert checked_url(url, allow_private=True) == url


def test_backoff_doubles_up_to_its_cap_and_gives_up() -> None:
    backoff = Backoff(base_seconds=5, cap_seconds=3600, give_up_after_seconds=86400)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff.delay(1000) == 3600
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert not backoff.exhausted(start, start + timedelta(hours=23))
    assert backoff.exhausted(start, start + timedelta(hours=24))


def test_a_sealed_secret_opens_only_for_its_endpoint_and_pepper() -> None:
    seal = SecretSeal(b"p" * 32)
    webhook_id = new_webhook_id()
    assert is_webhook_id(webhook_id)
    sealed = seal.seal(webhook_id, "whsec_abc")
    assert b"whsec_abc" not in sealed
    assert seal.open(webhook_id, sealed) == "whsec_abc"
    with pytest.raises(InvalidTag):
        seal.open(new_webhook_id(), sealed)
    with pytest.raises(InvalidTag):
        SecretSeal(b"q" * 32).open(webhook_id, sealed)
