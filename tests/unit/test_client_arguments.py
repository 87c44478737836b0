"""Arguments the client refuses before sending anything: a service key keyledger could not
read, a header value it would refuse. The ValueError never quotes the value (a secret)."""

from __future__ import annotations

import pytest

from keyledger_client import KeyledgerClient, SyncKeyledgerClient
from keyledger_client.calls import command

SECRET = "sk_live_2b7Qm4kP9xZr8Tn3Hv6Wc1Yd5Fg0JsLe"


@pytest.mark.parametrize(
    "service_key", [SECRET + "\n", "", " " + SECRET, SECRET + " x", "sk_live_é", "x" * 1025]
)
async def test_an_unreadable_service_key_is_refused_when_the_client_is_made(
    service_key: str,
) -> None:
    for make in (KeyledgerClient, SyncKeyledgerClient):
        with pytest.raises(ValueError) as refused:
            make("http://127.0.0.1:8080", service_key)
        assert "sk_live_" not in str(refused.value) and SECRET not in str(refused.value)


async def test_a_readable_service_key_is_taken() -> None:
    async with KeyledgerClient("http://127.0.0.1:8080", SECRET) as kl:
        assert kl.service_key == SECRET


@pytest.mark.parametrize("value", ["", " leading-space", "line\nbreak", "tab\tbad", "é", "x" * 256])
def test_header_values_keyledger_would_refuse_are_refused_before_sending(value: str) -> None:
    with pytest.raises(ValueError, match="idempotency_key must be 1-255") as refused:
        command("/p", None, idempotency_key=value)
    assert value not in str(refused.value) or not value
    with pytest.raises(ValueError, match="on_behalf_of must be 1-255"):
        command("/p", None, on_behalf_of=value)


def test_header_values_keyledger_takes_pass() -> None:
    made = command("/p", None, idempotency_key="order 42/retry~1", on_behalf_of="x" * 255)
    assert made.headers["Idempotency-Key"] == "order 42/retry~1"
