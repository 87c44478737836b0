"""Encoded answers made without headers still take headers added later, each its own."""

from __future__ import annotations

from service.http.encoded import EncodedResponse


def test_headers_added_after_an_answer_is_made_are_its_own() -> None:
    first, second = EncodedResponse(b"{}"), EncodedResponse(b"{}")
    assert (first.status, first.reason, dict(first.headers)) == (200, "OK", {})
    first.headers["X-Keyledger-Key-Id"] = "key_1"
    assert dict(first.headers) == {"X-Keyledger-Key-Id": "key_1"}
    assert dict(second.headers) == {}  # nothing shared between answers
    refused = EncodedResponse(b"{}", 401, {"Retry-After": "3"})
    assert (refused.status, refused.reason) == (401, "Unauthorized")
    assert dict(refused.headers) == {"Retry-After": "3"}
