"""The verify body's two readers agree: what msgspec's ``BearerBody`` accepts,
``VerifyBody`` (pydantic, the reader of every refusal) accepts with the same values."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain import key_material
from service.errors import KeyledgerError
from service.http.body import model_from_bytes
from service.http.verify_routes import _BEARER_BODY, BearerBody, VerifyBody
from tests.support.hostile import json_values, texts

SECRET = key_material.new_secret("secret", "live")
scope_words = st.sampled_from(["a:read", "a:*", "orders", "x" * 64, "x" * 65, "A", "a b", "a\n"])
values: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    texts,
    st.just(SECRET),
    st.sampled_from(["live", "test", "prod", "https://a.example", "x" * 2049]),
    st.lists(scope_words | texts, max_size=3),
    st.lists(st.just("a:read"), min_size=99, max_size=102),
    json_values,
)
fields = st.sampled_from(
    [
        "key",
        "key_id",
        "signature",
        "origin",
        "resource",
        "scopes",
        "environment",
        "min_position",
        "body",
        "timestamp",
        "other",
    ]
)
bodies = st.dictionaries(fields, values, max_size=5).map(lambda d: {"key": SECRET, **d})


def _both(raw: bytes) -> tuple[BearerBody | None, VerifyBody | None]:
    try:
        fast: BearerBody | None = _BEARER_BODY.decode(raw)
    except (msgspec.MsgspecError, ValueError):  # as the route catches them
        fast = None
    try:
        full: VerifyBody | None = model_from_bytes(VerifyBody, raw)
    except KeyledgerError:
        full = None
    return fast, full


def _same(fast: BearerBody, full: VerifyBody) -> None:
    assert full.credential() == fast.credential()
    assert full.requirements() == fast.requirements()
    assert full.min_position == fast.min_position


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_what_bearer_body_accepts_verify_body_accepts_alike(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    fast, full = _both(raw)
    if fast is not None:
        assert full is not None, raw
        _same(fast, full)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80) | texts.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_on_arbitrary_bytes_too(raw: bytes) -> None:
    fast, full = _both(b'{"key": "' + raw + b'"}')
    if fast is not None:
        assert full is not None
        _same(fast, full)


def test_the_usual_bodies_take_the_fast_reader() -> None:
    for body in (
        {"key": SECRET},
        {"key": SECRET, "scopes": ["a:read"], "environment": "live", "min_position": 3},
        {"key": SECRET, "origin": "https://a.example", "resource": "tpl", "scopes": None},
    ):
        fast, full = _both(json.dumps(body).encode())
        assert fast is not None and full is not None
        _same(fast, full)
    # Duplicate names: the last one counts, for both readers.
    duplicate = b'{"key": "first", "key": "second"}'
    fast, full = _both(duplicate)
    assert fast is not None and full is not None and fast.key == full.key == "second"
    # Signed requests, and everything refused, are the full reader's.
    for raw in (
        b'{"key_id": "key_x", "signature": "s", "method": "GET", "path": "/"}',
        b'{"key": null}',
        b'{"key": "a", "scopes": ["A"]}',
        b"[]",
        b'{"key": 1}',
    ):
        assert _both(raw)[0] is None


numbers = st.one_of(
    st.integers(-5, 10**18 + 5),
    st.booleans(),
    st.floats(allow_nan=False),
    st.integers(0, 99).map(str),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={"min_position": numbers, "cost": numbers}))
def test_numbers_are_read_alike_by_both(numbers_given: dict[str, Any]) -> None:
    """Integers are strict in both readers: "5", 5.0 and true are refused by each."""
    fast, full = _both(json.dumps({"key": SECRET, **numbers_given}).encode())
    assert (fast is None) == (full is None), numbers_given
    if fast is not None and full is not None:
        _same(fast, full)


def test_a_position_as_text_is_refused() -> None:
    assert _both(b'{"key": "k", "min_position": "5"}') == (None, None)
