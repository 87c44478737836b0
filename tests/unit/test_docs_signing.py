"""docs/signing.md cannot drift: its worked example is replayed against the real verifier.

The page's code blocks are run as written (a client's code, with only
``cryptography``); the values the page prints (string to sign, public key,
signatures, the verify request) must be what that code produces, and must
verify with keyledger's own signature check — while a tampered signature,
body, path or stale timestamp must not.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from events.models import KeyGenerated
from service.domain.decider import evolve
from service.verification.index import SingleKey, entry_from_state
from service.verification.policy import Requirements, SignedRequest, Verdict, verify_signed
from service.verification.signing import canonical_body, signing_payload

DOC = Path(__file__).resolve().parents[2] / "docs" / "signing.md"
_BLOCK = re.compile(r"<!-- doc-test: ([a-z0-9-]+) -->\n```[a-z]*\n(.*?)```", re.S)
KEY_ID = "key_01JGR6Z8Q4V3M2N7P9X5KTBWAC"
TIMESTAMP = 1767225600


def _blocks() -> dict[str, str]:
    blocks = dict(_BLOCK.findall(DOC.read_text(encoding="utf-8")))
    assert {"client", "ed25519", "rsa", "string-to-sign", "verify-request"} <= set(blocks)
    return blocks


@functools.cache
def _run_examples() -> dict[str, Any]:
    """The page's Python blocks, run in order in one namespace, as a reader would."""
    blocks = _blocks()
    namespace: dict[str, Any] = {}
    for name in ("client", "ed25519", "rsa"):
        exec(compile(blocks[name], f"docs/signing.md:{name}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    return _run_examples()


def _public_pem(private_pem: str) -> str:
    private = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _lookup(public_pem: str, algorithm: str) -> SingleKey:
    """The signing key as a replica's index would hold it, folded by the real decider."""
    state = evolve(
        None,
        KeyGenerated(
            key_id=KEY_ID,
            org_id="acme",
            occurred_at=datetime(2025, 12, 1, tzinfo=UTC),
            name="Doc example",
            type="signing",
            environment="live",
            scopes=("orders:write",),
            algorithm=algorithm,
            public_key=public_pem,
        ),
    )
    return SingleKey(entry_from_state(state))


def _verify(lookup: SingleKey, request: dict[str, Any], *, seconds_after: float = 5) -> Verdict:
    signed = SignedRequest(
        key_id=request["key_id"],
        signature=request["signature"],
        method=request["method"],
        path=request["path"],
        body=request.get("body"),
        timestamp=None if request.get("timestamp") is None else str(request["timestamp"]),
    )
    now = datetime.fromtimestamp(TIMESTAMP, UTC) + timedelta(seconds=seconds_after)
    requirements = Requirements(scopes=tuple(request.get("scopes", ())))
    return verify_signed(lookup, signed, requirements, now)


def test_the_printed_values_are_what_the_code_produces(example: dict[str, Any]) -> None:
    blocks = _blocks()
    assert example["payload"].decode() == blocks["string-to-sign"].strip()
    assert example["ed25519_signature"] == blocks["ed25519-signature"].strip()
    assert example["rsa_signature"] == blocks["rsa-signature"].strip()
    assert _public_pem(example["ed25519_private_pem"]).strip() == (
        blocks["ed25519-public-key"].strip()
    )
    request = json.loads(blocks["verify-request"])
    assert request["signature"] == example["ed25519_signature"]
    assert request["body"] == example["body"]


def test_the_client_payload_is_the_servers(example: dict[str, Any]) -> None:
    assert example["payload"] == signing_payload(
        "POST", "/v1/orders?dry_run=1", example["body"], str(TIMESTAMP)
    )


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa-2048"])
def test_the_worked_example_verifies(example: dict[str, Any], algorithm: str) -> None:
    private_pem, signature = (
        (example["ed25519_private_pem"], example["ed25519_signature"])
        if algorithm == "ed25519"
        else (example["rsa_private_pem"], example["rsa_signature"])
    )
    lookup = _lookup(_public_pem(private_pem), algorithm)
    request = json.loads(_blocks()["verify-request"]) | {"signature": signature}
    assert _verify(lookup, request).code == "VALID"
    assert _verify(lookup, request, seconds_after=-299).code == "VALID"


@pytest.mark.parametrize(
    "tampering",
    [
        {"path": "/v1/orders?dry_run=0"},
        {"method": "PUT"},
        {"body": '{"amount": 1251, "currency": "EUR"}'},
        {"body": None},
        {"timestamp": TIMESTAMP + 1},
        {"timestamp": None},
    ],
    ids=["path", "method", "body", "no-body", "timestamp", "no-timestamp"],
)
def test_a_tampered_request_does_not_verify(
    example: dict[str, Any], tampering: dict[str, Any]
) -> None:
    lookup = _lookup(_public_pem(example["ed25519_private_pem"]), "ed25519")
    request = json.loads(_blocks()["verify-request"]) | tampering
    assert _verify(lookup, request).code == "NOT_FOUND"


def test_a_tampered_or_misencoded_signature_does_not_verify(example: dict[str, Any]) -> None:
    lookup = _lookup(_public_pem(example["ed25519_private_pem"]), "ed25519")
    request = json.loads(_blocks()["verify-request"])
    good = request["signature"]
    flipped = ("A" if good[0] != "A" else "B") + good[1:]
    assert _verify(lookup, request | {"signature": flipped}).code == "NOT_FOUND"
    # The RSA signature of the same request is not the Ed25519 key's.
    assert _verify(lookup, request | {"signature": example["rsa_signature"]}).code == "NOT_FOUND"
    urlsafe = good.replace("+", "-").replace("/", "_").rstrip("=")
    assert _verify(lookup, request | {"signature": urlsafe}).code == "MALFORMED"


def test_a_signature_over_the_payload_itself_does_not_verify(example: dict[str, Any]) -> None:
    """The mistake the page warns about: Ed25519 signs the SHA-256 digest, not the payload."""
    private = serialization.load_pem_private_key(
        example["ed25519_private_pem"].encode(), password=None
    )
    wrong = base64.b64encode(private.sign(example["payload"])).decode()
    lookup = _lookup(_public_pem(example["ed25519_private_pem"]), "ed25519")
    request = json.loads(_blocks()["verify-request"]) | {"signature": wrong}
    assert _verify(lookup, request).code == "NOT_FOUND"


@pytest.mark.parametrize("seconds_after", [301, -301, 3600])
def test_a_stale_timestamp_does_not_verify(example: dict[str, Any], seconds_after: int) -> None:
    lookup = _lookup(_public_pem(example["ed25519_private_pem"]), "ed25519")
    request = json.loads(_blocks()["verify-request"])
    assert _verify(lookup, request, seconds_after=seconds_after).code == "NOT_FOUND"


def _table_rows() -> list[tuple[list[str | None], str | None]]:
    """(bodies, expected BODY part) from the page's table of canonical body examples."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split("| body | `BODY` part |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.strip().splitlines()[1:]:
        given_cell, expected_cell = line.strip("|").split("|")
        bodies: list[str | None] = re.findall(r"`([^`]*)`", given_cell)
        if "*(none)*" in given_cell:
            bodies.append(None)
        if "empty" in given_cell:
            bodies.append("")
        spans = re.findall(r"`([^`]*)`", expected_cell)
        rows.append((bodies, spans[0] if spans else None))
    return rows


def test_the_canonical_body_table_is_true() -> None:
    rows = _table_rows()
    assert len(rows) >= 4
    for bodies, expected in rows:
        assert bodies
        for body in bodies:
            assert canonical_body(body) == expected, body


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=6), st.booleans())
def test_the_documented_client_canonicalises_like_the_server(
    body: dict[str, Any], spaced: bool
) -> None:
    client = _run_examples()["canonical_body"]
    raw = json.dumps(body, indent=2 if spaced else None, ensure_ascii=spaced)
    assert client(raw) == canonical_body(raw)
