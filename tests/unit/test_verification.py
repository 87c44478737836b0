"""The verification decision without I/O: payloads, signatures, check order, index."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.codec import GENESIS_HASH, seal
from events.models import (
    Actor,
    KeyDisabled,
    KeyGenerated,
    KeyRevoked,
    KeyRotated,
    RateLimit,
)
from service.domain import key_material
from service.domain.ids import new_key_id
from service.verification.index import Offer, VerificationIndex
from service.verification.policy import (
    Requirements,
    SignedRequest,
    scope_granted,
    secret_digest,
    verify_bearer,
    verify_signed,
)
from service.verification.rate_limits import RateLimiter
from service.verification.signing import canonical_body, sign, signing_payload

PEPPER = b"unit-pepper"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NONE = Requirements()


class NoLookups:
    """A lookup that fails the test if verification consults it."""

    def by_secret_hash(self, digest: bytes) -> None:
        raise AssertionError("looked up a malformed key")

    def by_key_id(self, key_id: str) -> None:
        raise AssertionError("looked up a malformed key")


def generated(key_type: str = "secret", **fields: object) -> tuple[KeyGenerated, str]:
    """A KeyGenerated event and its secret (or private key PEM for signing keys)."""
    base: dict[str, object] = {
        "key_id": new_key_id(),
        "org_id": "acme",
        "occurred_at": NOW - timedelta(days=1),
        "name": "Trading Bot",
        "type": key_type,
        "environment": "live",
        "scopes": ("orders:*", "prices:read"),
    }
    if key_type == "signing":
        pair = key_material.new_signing_key_pair(str(fields.pop("algorithm", "ed25519")))
        base |= {"public_key": pair.public_pem, "algorithm": "ed25519"}
        credential = pair.private_pem
    else:
        credential = key_material.new_secret(key_type, str(fields.get("environment", "live")))
        base |= {"secret_hash": key_material.secret_hash(PEPPER, credential)}
    base |= fields
    return KeyGenerated(**base), credential


def indexed(*events: object) -> VerificationIndex:
    index = VerificationIndex()
    for event in events:
        index.apply_event(event)  # type: ignore[arg-type]
    return index


# --- signing payload (docs/signing.md §1) -----------------------------------------


def test_spec_example_payload() -> None:
    body = '{"symbol": "OIL-BTC", "side": "buy", "qty": 12, "note": null}'
    assert signing_payload("post", "/api/v1/orders", body) == (
        b"POST:/api/v1/orders:qty=12&side=buy&symbol=OIL-BTC"
    )


@pytest.mark.parametrize("body", [None, "", "{}", '{"a": null, "b": null}', "[1,2]", "not json"])
def test_bodies_that_add_nothing(body: str | None) -> None:
    assert signing_payload("GET", "/v1/x?b=2&a=1", body) == b"GET:/v1/x?b=2&a=1"


def test_body_values_and_timestamp() -> None:
    body = '{"z": {"y": 1, "x": [true, null]}, "f": 1.5, "ok": false, "s": "a b"}'
    assert canonical_body(body) == 'f=1.5&ok=false&s=a b&z={"x":[true,null],"y":1}'
    assert signing_payload("DELETE", "/k", "{}", "1700000000") == b"DELETE:/k:1700000000"


# --- scopes -----------------------------------------------------------------------


def test_scope_wildcards() -> None:
    granted = ("templates:*", "prices:read")
    assert scope_granted(granted, "templates:write")
    assert scope_granted(granted, "prices:read")
    assert not scope_granted(granted, "templates")
    assert not scope_granted(granted, "prices:write")
    assert not scope_granted(("*",), "anything")  # a bare "*" is not a wildcard
    assert scope_granted(("orders.*",), "orders.read")


# --- bearer check order -------------------------------------------------------------


def test_malformed_is_decided_without_a_lookup() -> None:
    # Wrong length or not ASCII: refused before the HMAC, let alone a lookup.
    for candidate in ("sk_live_short", "x" * 10_000, "", "sk_live_" + "é" * 55, "\ud800" * 63):
        assert verify_bearer(NoLookups(), PEPPER, candidate, NONE, NOW).code == "MALFORMED"


def test_a_bad_checksum_is_malformed_though_looked_up_first() -> None:
    event, secret = generated()
    broken = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert verify_bearer(indexed(event), PEPPER, broken, NONE, NOW).code == "MALFORMED"


_SECRET_CHARACTERS = st.sampled_from("sklivetr_0189AZaz\u00e9\ud800 ")


@given(
    st.one_of(
        st.text(_SECRET_CHARACTERS, min_size=60, max_size=66),
        st.text(max_size=80),
        st.builds(
            lambda secret, at, char: secret[:at] + char + secret[at + 1 :],
            st.sampled_from([key_material.new_secret("secret", "live") for _ in range(3)]),
            st.integers(0, key_material.SECRET_LENGTH - 1),
            _SECRET_CHARACTERS,
        ),
    )
)
def test_lookup_first_gives_the_documented_verdicts(candidate: str) -> None:
    # The index is asked before the format (a key's secret is well formed): the verdict
    # must still be the documented order's, MALFORMED first.
    event, secret = generated()
    index = indexed(event)
    verdict = verify_bearer(index, PEPPER, candidate, NONE, NOW)
    if candidate == secret:
        expected = "VALID"
    elif not key_material.is_well_formed(candidate):
        expected = "MALFORMED"
    else:
        expected = "NOT_FOUND"
    assert verdict.code == expected
    assert verify_bearer(index, PEPPER, secret, NONE, NOW).code == "VALID"


def test_unknown_secret_is_not_found() -> None:
    event, _ = generated()
    other = key_material.new_secret("secret", "live")
    verdict = verify_bearer(indexed(event), PEPPER, other, NONE, NOW)
    assert (verdict.code, verdict.entry) == ("NOT_FOUND", None)
    assert verdict.to_json() == {
        "valid": False,
        "code": "NOT_FOUND",
        "http_status": 401,
        "key": None,
    }


def test_valid_secret_key_answer() -> None:
    event, secret = generated(metadata={"plan": "pro"})
    verdict = verify_bearer(indexed(event), PEPPER, secret, NONE, NOW)
    assert verdict.to_json() == {
        "valid": True,
        "code": "VALID",
        "http_status": 200,
        "key": {
            "id": event.key_id,
            "org_id": "acme",
            "name": "Trading Bot",
            "type": "secret",
            "environment": "live",
            "scopes": ["orders:*", "prices:read"],
            "metadata": {"plan": "pro"},
            "expires_at": None,
            "identity_id": None,
        },
    }


def test_status_codes() -> None:
    event, secret = generated()
    at = {"key_id": event.key_id, "org_id": "acme", "occurred_at": NOW}
    assert (
        verify_bearer(indexed(event, KeyDisabled(**at)), PEPPER, secret, NONE, NOW).code
        == "DISABLED"
    )
    revoked = indexed(event, KeyRevoked(**at, reason="leaked"))
    assert verify_bearer(revoked, PEPPER, secret, NONE, NOW).code == "REVOKED"
    # Past expires_at is EXPIRED even though no KeyExpired was written.
    expiring, secret2 = generated(expires_at=NOW - timedelta(seconds=1))
    verdict = verify_bearer(indexed(expiring), PEPPER, secret2, NONE, NOW)
    assert verdict.code == "EXPIRED" and verdict.to_json()["http_status"] == 401
    # Status is checked before environment, origin and scopes.
    wrong_everything = Requirements(environment="test", origin="https://x", scopes=("z",))
    assert verify_bearer(revoked, PEPPER, secret, wrong_everything, NOW).code == "REVOKED"


def test_environment_origin_scopes() -> None:
    event, secret = generated()
    index = indexed(event)

    def code(**req: object) -> str:
        return verify_bearer(index, PEPPER, secret, Requirements(**req), NOW).code  # type: ignore[arg-type]

    assert code(environment="test") == "WRONG_ENVIRONMENT"
    assert code(environment="live") == "VALID"
    assert code(origin="https://app.example.com") == "ORIGIN_NOT_ALLOWED"
    assert code(scopes=("orders:create", "prices:read")) == "VALID"
    assert code(scopes=("orders:create", "prices:write")) == "INSUFFICIENT_SCOPE"
    assert code(environment="test", scopes=("nope",)) == "WRONG_ENVIRONMENT"


def test_embed_keys() -> None:
    event, secret = generated(
        "embed",
        allowed_origins=("https://app.example.com",),
        resource="tmpl_1",
        scopes=("templates:read",),
    )
    index = indexed(event)

    def code(**req: object) -> str:
        return verify_bearer(index, PEPPER, secret, Requirements(**req), NOW).code  # type: ignore[arg-type]

    ok = {"origin": "https://app.example.com", "resource": "tmpl_1"}
    assert code(**ok) == "VALID"
    assert code(resource="tmpl_1") == "ORIGIN_NOT_ALLOWED"
    assert code(origin="https://app.example.com:443", resource="tmpl_1") == "ORIGIN_NOT_ALLOWED"
    assert code(origin="https://app.example.com") == "RESOURCE_NOT_ALLOWED"
    assert code(origin="https://app.example.com", resource="tmpl_2") == "RESOURCE_NOT_ALLOWED"
    assert code(**ok, scopes=("templates:write",)) == "INSUFFICIENT_SCOPE"


def test_rate_limit_with_retry_after() -> None:
    clock = [1000.5]
    limiter = RateLimiter(clock=lambda: clock[0])
    event, secret = generated(rate_limit=RateLimit(limit=2, window="1m"))
    index = indexed(event)
    codes = [verify_bearer(index, PEPPER, secret, NONE, NOW, limiter).code for _ in range(3)]
    assert codes == ["VALID", "VALID", "RATE_LIMITED"]
    verdict = verify_bearer(index, PEPPER, secret, NONE, NOW, limiter)
    assert verdict.to_json()["http_status"] == 429
    assert verdict.retry_after == 20  # the window 960-1020 ends in 19.5 s
    clock[0] = 1020.0
    assert verify_bearer(index, PEPPER, secret, NONE, NOW, limiter).code == "VALID"
    # A refused check does not consume budget.
    assert verify_bearer(index, PEPPER, secret, Requirements(scopes=("x",)), NOW, limiter).code == (
        "INSUFFICIENT_SCOPE"
    )
    assert verify_bearer(index, PEPPER, secret, NONE, NOW, limiter).code == "VALID"


def test_rotation_grace() -> None:
    event, old_secret = generated()
    new_secret = key_material.new_secret("secret", "live")
    rotated = KeyRotated(
        key_id=event.key_id,
        org_id="acme",
        occurred_at=NOW,
        secret_hash=key_material.secret_hash(PEPPER, new_secret),
        previous_valid_until=NOW + timedelta(hours=1),
    )
    index = indexed(event, rotated)
    assert verify_bearer(index, PEPPER, new_secret, NONE, NOW).code == "VALID"
    assert verify_bearer(index, PEPPER, old_secret, NONE, NOW).code == "VALID"
    later = NOW + timedelta(hours=1)
    assert verify_bearer(index, PEPPER, old_secret, NONE, later).code == "REVOKED"
    assert verify_bearer(index, PEPPER, new_secret, NONE, later).code == "VALID"
    # A second rotation forgets the first secret altogether.
    third = key_material.new_secret("secret", "live")
    index.apply_event(
        rotated.model_copy(
            update={
                "secret_hash": key_material.secret_hash(PEPPER, third),
                "previous_valid_until": later,
            }
        )
    )
    assert verify_bearer(index, PEPPER, old_secret, NONE, NOW).code == "NOT_FOUND"
    assert index.by_secret_hash(secret_digest(PEPPER, new_secret)) is not None


# --- signed requests -----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa-2048"])
def test_signed_requests(algorithm: str) -> None:
    event, private_pem = generated("signing", algorithm=algorithm)
    event = event.model_copy(update={"algorithm": algorithm})
    index = indexed(event)
    body = '{"symbol": "OIL-BTC", "qty": 12}'
    payload = signing_payload("POST", "/api/v1/orders?x=1", body)
    signature = sign(private_pem, payload)
    request = SignedRequest(event.key_id, signature, "POST", "/api/v1/orders?x=1", body)
    assert verify_signed(index, request, NONE, NOW).code == "VALID"
    tampered = SignedRequest(event.key_id, signature, "POST", "/api/v1/orders?x=2", body)
    assert verify_signed(index, tampered, NONE, NOW).code == "NOT_FOUND"
    other_body = SignedRequest(event.key_id, signature, "POST", "/api/v1/orders?x=1", '{"qty":13}')
    assert verify_signed(index, other_body, NONE, NOW).code == "NOT_FOUND"


def test_signed_timestamp_window() -> None:
    event, private_pem = generated("signing")
    index = indexed(event)
    stamp = str(int(NOW.timestamp()) - 299)
    signature = sign(private_pem, signing_payload("GET", "/p", None, stamp))
    request = SignedRequest(event.key_id, signature, "GET", "/p", None, stamp)
    assert verify_signed(index, request, NONE, NOW).code == "VALID"
    assert verify_signed(index, request, NONE, NOW + timedelta(seconds=2)).code == "NOT_FOUND"
    unsigned_stamp = SignedRequest(event.key_id, signature, "GET", "/p", None, None)
    assert verify_signed(index, unsigned_stamp, NONE, NOW).code == "NOT_FOUND"


def test_signed_malformed_without_lookup() -> None:
    key_id = new_key_id()
    good_sig = "A" * 88
    cases = [
        SignedRequest(key_id, "not base64!", "GET", "/p"),
        SignedRequest(key_id, "", "GET", "/p"),
        SignedRequest("sk_live_nope", good_sig, "GET", "/p"),
        SignedRequest(key_id, good_sig, "G ET", "/p"),
        SignedRequest(key_id, good_sig, "GET", "p"),
        SignedRequest(key_id, good_sig, "GET", "/p", None, "soon"),
    ]
    for request in cases:
        assert verify_signed(NoLookups(), request, NONE, NOW).code == "MALFORMED"


def test_signing_rotation_grace() -> None:
    event, old_private = generated("signing")
    pair = key_material.new_signing_key_pair("ed25519")
    rotated = KeyRotated(
        key_id=event.key_id,
        org_id="acme",
        occurred_at=NOW,
        public_key=pair.public_pem,
        previous_valid_until=NOW + timedelta(minutes=5),
    )
    index = indexed(event, rotated)
    old = SignedRequest(event.key_id, sign(old_private, b"GET:/p"), "GET", "/p")
    new = SignedRequest(event.key_id, sign(pair.private_pem, b"GET:/p"), "GET", "/p")
    assert verify_signed(index, old, NONE, NOW).code == "VALID"
    assert verify_signed(index, new, NONE, NOW).code == "VALID"
    assert verify_signed(index, old, NONE, NOW + timedelta(minutes=5)).code == "REVOKED"


# --- the index follows the log in order ---------------------------------------------


def test_index_offers_apply_in_position_order_only() -> None:
    event, secret = generated()
    revoked = KeyRevoked(key_id=event.key_id, org_id="acme", occurred_at=NOW, reason="compromised")
    envelopes = []
    previous = GENESIS_HASH
    for position, domain_event in enumerate([event, revoked], start=1):
        envelope = seal(
            domain_event,
            event_id=uuid.uuid4(),
            stream_version=position,
            position=position,
            actor=Actor(id="test"),
            previous_hash=previous,
        )
        previous = envelope.hash
        envelopes.append(envelope)
    index = VerificationIndex()
    assert index.offer(envelopes[1]) is Offer.GAP
    assert index.offer(envelopes[0]) is Offer.APPLIED
    assert index.offer(envelopes[0]) is Offer.STALE
    assert verify_bearer(index, PEPPER, secret, NONE, NOW).code == "VALID"
    assert index.offer(envelopes[1]) is Offer.APPLIED
    assert (index.position, len(index)) == (2, 1)
    assert verify_bearer(index, PEPPER, secret, NONE, NOW).code == "REVOKED"
