"""The client's calls without I/O: retries, errors, commands, signing payloads."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from hypothesis import given
from hypothesis import strategies as st

from keyledger_client import RetryPolicy, sign_request
from keyledger_client.calls import (
    Reply,
    api_error,
    command,
    delivery_page,
    get_webhook,
    key_usage,
    list_webhooks,
    me,
    register_webhook,
    remove_webhook,
)
from keyledger_client.models import WebhookResult
from keyledger_client.retries import retry_after_of
from keyledger_client.signing import canonical_body, signing_payload


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    for attempt in range(10):
        delay = policy.delay(attempt)
        assert 0 <= delay <= min(1.0, 0.1 * 2**attempt)


def test_retry_after_is_honoured_within_the_cap() -> None:
    policy = RetryPolicy(max_delay=5.0)
    assert policy.delay(0, 2.0) == 2.0 and policy.delay(3, 60.0) == 5.0
    assert retry_after_of({"retry-after": "3"}) == 3.0
    assert retry_after_of({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}) is None
    assert retry_after_of({}) is None


def test_what_is_sent_again() -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.0)
    busy = Reply(503, {"retry-after": "1"}, None)
    assert policy.after(0, None) == 0.0  # a connection error
    assert policy.after(0, busy) == 1.0 and policy.after(1, Reply(429, {}, None)) == 0.0
    assert policy.after(2, busy) is None and policy.after(2, None) is None  # out of attempts
    for status in (200, 201, 400, 401, 404, 409, 422, 500):
        assert policy.after(0, Reply(status, {}, None)) is None


def test_errors_carry_status_code_and_request_id() -> None:
    body = {"error": {"code": "key_not_found", "message": "no", "request_id": "req-1"}}
    error = api_error(Reply(404, {}, body))
    assert (error.status, error.code, error.request_id) == (404, "key_not_found", "req-1")
    foreign = api_error(Reply(502, {"x-request-id": "req-2"}, None))
    assert (foreign.status, foreign.code, foreign.request_id) == (502, "http_502", "req-2")


def test_a_422_names_the_fields_at_fault() -> None:
    def refusal(*locs: list[object]) -> str:
        details = [{"loc": loc, "msg": "bad", "type": "t"} for loc in locs]
        body = {"error": {"code": "validation_error", "message": "invalid", "details": details}}
        return str(api_error(Reply(422, {}, body)))

    assert refusal(["name"]) == "422 validation_error: invalid (fields: name)"
    assert refusal(["query", "limit"], ["query", "limit"]).endswith("(fields: query.limit)")
    named = refusal(["a"], ["b"], ["c", 0], ["d"], ["e"])
    assert named.endswith("(fields: a, b, c.0 and 2 more)")
    assert refusal([]) == "422 validation_error: invalid"  # nothing to name
    missing = api_error(Reply(404, {}, {"error": {"code": "key_not_found", "message": "no"}}))
    assert str(missing) == "404 key_not_found: no"


def test_every_command_carries_an_idempotency_key() -> None:
    first, second = command("/p", None), command("/p", None)
    assert first.headers["Idempotency-Key"] != second.headers["Idempotency-Key"]
    given_key = command("/p", {"a": 1}, idempotency_key="mine", if_match=3, on_behalf_of="u:1")
    assert given_key.headers == {
        "Idempotency-Key": "mine",
        "If-Match": '"3"',
        "X-On-Behalf-Of": "u:1",
    }


def test_webhook_commands_carry_an_idempotency_key_too() -> None:
    registered = register_webhook("acme", "https://h.example/k", None, on_behalf_of="u:1")
    assert (registered.method, registered.path) == ("POST", "/v1/orgs/acme/webhooks")
    assert registered.json == {"url": "https://h.example/k"}
    assert registered.headers["Idempotency-Key"] and registered.headers["X-On-Behalf-Of"] == "u:1"
    removed = remove_webhook("acme", "wh_1", idempotency_key="mine")
    assert (removed.method, removed.path, removed.json) == (
        "DELETE",
        "/v1/orgs/acme/webhooks/wh_1",
        None,
    )
    assert removed.headers == {"Idempotency-Key": "mine"}


WEBHOOK = {
    "id": "wh_01JC0000000000000000000000",
    "org_id": "acme",
    "url": "https://hooks.example.com/kl",
    "event_types": ["KeyRevoked"],
    "created_at": "2026-11-30T04:57:48.878351Z",
    "created_by": {"id": "key_01JD0000000000000000000000", "request_id": "req_1"},
    "removed_at": None,
    "removed_by": None,
}


def test_webhook_reads_send_nothing_but_the_path_and_read_the_endpoint() -> None:
    listed = list_webhooks("acme")
    assert (listed.method, listed.path, listed.params, listed.json) == (
        "GET",
        "/v1/orgs/acme/webhooks",
        {},
        None,
    )
    endpoints = listed.parse(Reply(200, {}, {"data": [WEBHOOK]}))
    assert [(w.id, w.event_types) for w in endpoints] == [(WEBHOOK["id"], ["KeyRevoked"])]
    one = get_webhook("acme", "wh/../x")  # a caller's id cannot leave its path segment
    assert (one.method, one.path) == ("GET", "/v1/orgs/acme/webhooks/wh%2F..%2Fx")
    webhook = one.parse(Reply(200, {}, {"webhook": WEBHOOK}))
    assert webhook.created_at == datetime(2026, 11, 30, 4, 57, 48, 878351, tzinfo=UTC)
    assert webhook.created_by is not None and webhook.created_by.request_id == "req_1"


def test_a_webhook_answer_carries_its_position_when_the_server_sends_one() -> None:
    assert WebhookResult.model_validate({"webhook": WEBHOOK, "position": 1043}).position == 1043
    assert WebhookResult.model_validate({"webhook": WEBHOOK}).position is None  # older server


def test_deliveries_page_backwards_by_attempt_id() -> None:
    first = delivery_page("acme", "wh_1", None, None)
    assert (first.path, first.params) == ("/v1/orgs/acme/webhooks/wh_1/deliveries", {})
    later = delivery_page("acme", "wh_1", 2, 17)
    assert later.params == {"limit": "2", "before": "17"}
    attempt = {
        "id": 17,
        "event_id": "0b7f7a2e-3c1e-4d5c-9a7e-2f1f9c1b5e11",
        "event_type": "KeyRevoked",
        "key_id": "key_01JD0000000000000000000000",
        "position": 812,
        "attempt": 2,
        "attempted_at": "2026-11-30T04:57:48.878351Z",
        "outcome": "failed",
        "status_code": 500,
        "error": "HTTP 500",
    }
    page = later.parse(Reply(200, {}, {"data": [attempt], "next_before": 17}))
    assert page.next_cursor == 17 and page.items[0].outcome == "failed"
    assert page.items[0].attempted_at.tzinfo is not None
    last = later.parse(Reply(200, {}, {"data": [], "next_before": None}))
    assert (last.items, last.next_cursor) == ([], None)


def test_key_usage_sends_the_range_given_with_its_timezone() -> None:
    plain = key_usage("acme", "key_1", None, None, None)
    assert (plain.method, plain.path, plain.params) == ("GET", "/v1/orgs/acme/keys/key_1/usage", {})
    east = timezone(timedelta(hours=2))
    ranged = key_usage(
        "acme",
        "key_1",
        datetime(2026, 11, 30, 9, tzinfo=east),
        datetime(2026, 11, 30, 8, tzinfo=UTC),
        "minute",
    )
    assert ranged.params == {
        "since": "2026-11-30T09:00:00+02:00",
        "until": "2026-11-30T08:00:00+00:00",
        "granularity": "minute",
    }
    body = {
        "granularity": "minute",
        "series": [
            {
                "t": "2026-11-30T07:00:00Z",
                "valid": 3,
                "rate_limited": 1,
                "usage_exceeded": 0,
                "denied": 2,
            }
        ],
    }
    usage = ranged.parse(Reply(200, {}, body))
    bucket = usage.series[0]
    assert bucket.t == datetime(2026, 11, 30, 7, tzinfo=UTC)
    assert (bucket.valid, bucket.rate_limited, bucket.usage_exceeded, bucket.denied) == (3, 1, 0, 2)


def test_me_reads_the_calling_key() -> None:
    call = me()
    assert (call.method, call.path, call.params) == ("GET", "/v1/me", {})
    everywhere = call.parse(Reply(200, {}, {"id": "key_1", "scopes": ["admin"], "orgs": None}))
    assert (everywhere.id, everywhere.scopes, everywhere.orgs) == ("key_1", ["admin"], None)
    scoped = call.parse(Reply(200, {}, {"id": "key_2", "scopes": [], "orgs": ["acme"]}))
    assert scoped.orgs == ["acme"]


def test_the_documented_payloads() -> None:
    body = '{"symbol": "OIL-BTC", "side": "buy", "qty": 12, "note": null}'
    assert signing_payload("post", "/api/v1/orders", body) == (
        b"POST:/api/v1/orders:qty=12&side=buy&symbol=OIL-BTC"
    )
    assert signing_payload("GET", "/p?q=1", "{}", "1700000000") == b"GET:/p?q=1:1700000000"
    assert canonical_body('{"o": {"b": 1, "a": [true, null]}}') == 'o={"a":[true,null],"b":1}'
    assert canonical_body("[1]") is None and canonical_body("nope") is None


KEY_ID = "key_01JD0000000000000000000000"


@pytest.mark.parametrize(
    ("method", "path", "key_id", "fault"),
    [
        ("POST", "https://api.example/orders", KEY_ID, "path"),  # a URL, not a path
        ("POST", "orders", KEY_ID, "path"),
        ("POST", "/orders with space", KEY_ID, "path"),
        ("POST", "", KEY_ID, "path"),
        ("/orders", "POST", KEY_ID, "method"),  # swapped
        ("PO ST", "/orders", KEY_ID, "method"),
        ("", "/orders", KEY_ID, "method"),
        ("POST", "/orders", "key_1", "key_id"),
        ("POST", "/orders", "sk_live_oops", "key_id"),  # a secret is no key id
    ],
)
def test_sign_request_refuses_what_could_never_verify(
    method: str, path: str, key_id: str, fault: str
) -> None:
    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ValueError, match=f"^{fault} must") as refused:
        sign_request(method, path, None, pem, key_id)
    assert "sk_live_oops" not in str(refused.value)


def test_sign_request_signs_as_each_algorithm_requires() -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for private in (ed, rs):
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        headers = sign_request("GET", "/x", None, pem, KEY_ID, timestamp=1700000000)
        assert headers["X-API-Key"] == KEY_ID and headers["X-API-Timestamp"] == "1700000000"
        signature = base64.b64decode(headers["X-API-Signature"])
        payload = b"GET:/x:1700000000"
        if isinstance(private, ed25519.Ed25519PrivateKey):
            private.public_key().verify(signature, hashlib.sha256(payload).digest())
        else:
            private.public_key().verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())


@given(st.dictionaries(st.text(max_size=5), st.none() | st.integers() | st.text(max_size=5)))
def test_the_order_of_fields_does_not_change_the_payload(body: dict[str, object]) -> None:
    import json

    assert canonical_body(json.dumps(body)) == canonical_body(
        json.dumps(dict(reversed(body.items())))
    )
