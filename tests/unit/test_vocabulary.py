"""The input vocabulary alone: identifiers whole, text storable, ASCII numbers, bounded instants."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest

from events.subjects import event_subject, is_subject_token, subject_filter
from service.domain import key_material
from service.domain import vocabulary as v
from service.domain.durations import parse_grace_period
from service.domain.ids import KEY_ID_PATTERN, is_key_id, new_key_id
from service.domain.orgs import ORG_PATTERN, is_org_id, is_tenant_org
from service.log_config import library_log_handler
from service.redaction import REDACTED, redact_text, redact_value

KEY_ID = "key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"


@pytest.mark.parametrize(
    ("identifier", "good", "bad"),
    [
        (v.ORG_ID, ["acme", "a", "0-a_b", "a" * 63], ["", "Acme", "-a", "a" * 64, "a b", "é"]),
        (v.KEY_ID, [KEY_ID], ["key_", "KEY_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P", KEY_ID[:-1]]),
        (v.SCOPE, ["a", "orders:read", "templates:*"], ["", "A", "1a", "a" * 65, "a b"]),
        (v.ORIGIN, ["https://a.example", "http://localhost:3000", "https://[::1]:8443"], []),
        (v.ACTOR_ID, ["key_1", "user:42", "~" * 255], ["", " a", "a" * 256, "é"]),
        (v.REQUEST_ID, ["req-1", "a.b:c_d"], ["", "a b", "a/b", "x" * 129]),
        (v.HEADER_TEXT, ["user:42", "a b", "x" * 255], ["", " lead", "x" * 256, "é", "\x7f"]),
        (v.CREDENTIAL, ["sk_live_x", "~"], ["", "\udcff", "ÿ", "a b", "x" * 1025]),
        (v.DIGITS, ["0", "9" * 18], ["", "9" * 19, "-1", "+1", "1.0", "²", "١", " 1"]),
    ],
)
def test_identifiers_match_whole_strings_only(
    identifier: v.Identifier, good: list[str], bad: list[str]
) -> None:
    for value in good:
        assert identifier.matches(value), value
        # A trailing newline, NUL or space is never part of a match (fullmatch, \A…\Z).
        # (Header text may end in a space: aiohttp strips it anyway.)
        for tail in ("\n", "\x00", "\r\n", *([] if identifier is v.HEADER_TEXT else [" "])):
            assert not identifier.matches(value + tail), repr(value + tail)
            assert not identifier.regex.match(value + tail), repr(value + tail)
        assert not identifier.matches("\n" + value)
    for value in bad:
        assert not identifier.matches(value), value
    assert not identifier.matches(None) and not identifier.matches(42)


def test_domain_id_checks_use_the_vocabulary() -> None:
    assert is_org_id("_system") and not is_tenant_org("_system")
    assert is_org_id("nl") and not is_org_id("nl\n") and not is_org_id("_system\n")
    assert not ORG_PATTERN.match("nl\n") and not KEY_ID_PATTERN.match(KEY_ID + "\n")
    assert is_key_id(new_key_id()) and not is_key_id(KEY_ID + "\n")
    assert v.Identifier("a+").json_pattern == "^(?:a+)$"


@pytest.mark.parametrize(
    "text",
    [
        "a\x00b",
        "\x1b[31m",
        "del\x7f",
        "c1\x85",
        "\x9f",
        "tab\t",
        "nl\n",
        "cr\r",
        "\ud800",
        "\udcff",
    ],
)
def test_plain_text_refuses_control_characters_and_lone_surrogates(text: str) -> None:
    assert v.text_problem(text) is not None
    with pytest.raises(ValueError) as refused:
        v.plain_text(text)
    assert text not in str(refused.value)  # the message never repeats the input


@pytest.mark.parametrize("text", ["Trading Bot", "ünïcødé ✓", "emoji 🔑", "\u2028", "\ufeff", ""])
def test_plain_text_keeps_everything_else(text: str) -> None:
    assert v.text_problem(text) is None and v.plain_text(text) == text


def test_metadata_strings_may_keep_line_breaks_only() -> None:
    for allowed in ("a\tb", "line\nline", "crlf\r\n"):
        assert v.text_problem(allowed, line_breaks=True) is None
    for refused in ("\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\ud800"):
        assert v.text_problem(refused, line_breaks=True) is not None


def nest(depth: int, container: str = "object") -> dict:
    value: object = "leaf"
    for _ in range(depth):
        value = {"k": value} if container == "object" else [value]
    return {"top": value} if depth else {}


@pytest.mark.parametrize("container", ["object", "array"])
def test_metadata_depth_is_at_most_eight_levels(container: str) -> None:
    # Level 0 is the metadata object; nest(n) puts n containers inside it, at levels 1…n.
    assert v.metadata_problem(nest(v.MAX_METADATA_DEPTH, container)) is None
    assert v.metadata_problem({"top": nest(v.MAX_METADATA_DEPTH, container)}) is not None
    assert v.metadata_problem(nest(v.MAX_METADATA_DEPTH + 1, container)) is not None
    assert v.metadata_problem(nest(5000, container)) is not None  # no recursion: no crash


def test_metadata_values() -> None:
    good = {"a": [1, 2.5, None, True, "x\ty"], "b": {"c": -(10**30)}, "": "empty key"}
    assert v.metadata_value(good) == good
    for bad in (
        {"k\x00": 1},
        {"k": "\x00"},
        {"k": ["\ud800"]},
        {"\udcff": 1},
        {"k": float("inf")},
        {"k": float("nan")},
        {"k": {1, 2}},
        {"k": "x" * 5000},
    ):
        with pytest.raises(ValueError):
            v.metadata_value(bad)


def test_scopes_and_origins() -> None:
    assert v.granted_scope("templates:*") == "templates:*"
    for bad in ("*", "temp*ates", "a**", "orders:read\n", "Orders"):
        with pytest.raises(ValueError):
            v.granted_scope(bad)
    assert v.requested_scope("orders:read") == "orders:read"
    with pytest.raises(ValueError):
        v.requested_scope("orders:read\n")
    assert v.origin("HTTPS://App.Example.COM") == "https://app.example.com"
    for bad in (
        "https://a.example\n",
        "https://a.example/",
        "https://\u212a.example",  # KELVIN SIGN lower-cases to an ASCII "k"
        "https://a.example:\u0661\u0662",  # Arabic-Indic digits as a port
        "https://a.example:99999",
        "ftp://a.example",
    ):
        with pytest.raises(ValueError):
            v.origin(bad)


def test_ascii_integers() -> None:
    assert v.ascii_integer("0") == 0 and v.ascii_integer("9" * 18) == 10**18 - 1
    for bad in ("", "²", "١", "１", "9" * 19, "-1", "1_000", " 1", "1\n", "0x10"):
        assert v.ascii_integer(bad) is None, bad


def test_instants_stay_within_years_1_to_9999_in_utc() -> None:
    assert v.parse_instant("2030-01-01T00:00:00+02:00").utcoffset() == timedelta(hours=2)
    assert v.parse_instant("9999-12-31T23:59:59.999998Z").year == 9999
    assert v.parse_instant("0001-01-01T00:00:00.000001Z").year == 1
    for bad in (
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "9999-12-31T23:00:00-01:00",
        "9999-12-31T23:59:59.999999Z",  # asyncpg's infinity
        "0001-01-01T00:00:00Z",  # asyncpg's -infinity
        "2030-01-01T00:00:00",
        "2030-01-01",
        "\u0662\u0660\u0663\u0660-01-01T00:00:00Z",
        "tomorrow",
        "",
    ):
        with pytest.raises(ValueError):
            v.parse_instant(bad)
    with pytest.raises(ValueError):
        v.bounded_instant(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    assert v.bounded_instant(moment) is moment


def test_grace_periods_are_ascii_and_whole() -> None:
    assert parse_grace_period("24h") == timedelta(hours=24)
    for bad in ("24h\n", "\u0663h", "²h", " 1h", "1h "):
        with pytest.raises(ValueError):
            parse_grace_period(bad)


def test_subject_builder_refuses_bad_tokens() -> None:
    assert (
        event_subject("acme", KEY_ID, "KeyRevoked") == f"keyledger.events.acme.{KEY_ID}.KeyRevoked"
    )
    assert event_subject("_system", KEY_ID, "KeyGenerated", prefix="a.b.c").startswith("a.b.c.")
    for bad_org in ("nl\n", "", "a.b", "*", ">", "a b", "\x00", "\ud800", "é", "\x7f"):
        assert not is_subject_token(bad_org)
        with pytest.raises(ValueError, match="org_id"):
            event_subject(bad_org, KEY_ID, "KeyRevoked")
    with pytest.raises(ValueError, match="key_id"):
        event_subject("acme", "key\t1", "KeyRevoked")
    with pytest.raises(ValueError, match="event_type"):
        event_subject("acme", KEY_ID, "Key.Revoked")
    with pytest.raises(ValueError, match="prefix"):
        event_subject("acme", KEY_ID, "KeyRevoked", prefix="keyledger..events")
    assert subject_filter(org_id="acme") == "keyledger.events.acme.*.*"
    with pytest.raises(ValueError):
        subject_filter(org_id="ac me")


def test_redaction_hides_secret_shapes_anywhere() -> None:
    secret = key_material.new_secret("secret", "live")
    embed = key_material.new_secret("embed", "test")
    assert (
        redact_text(f"unknown query parameter {secret!r}")
        == f"unknown query parameter '{REDACTED}'"
    )
    assert secret not in redact_text(f"x{secret}y") and embed not in redact_text(embed)
    assert secret[:30] not in redact_text(secret[:30])  # truncated: still hidden
    hint = key_material.hint(secret)
    assert redact_text(hint) == hint  # hints stay readable
    details = [{"loc": ["body", secret], "msg": "extra", "ctx": {secret: embed}}, (secret,)]
    assert secret not in str(redact_value(details)) and embed not in str(redact_value(details))
    pem = key_material.new_signing_key_pair("ed25519").private_pem
    assert pem.splitlines()[1] not in redact_text(f"oops: {pem}")
    assert redact_value(7) == 7 and redact_value(None) is None


def test_library_log_lines_are_redacted_json() -> None:
    secret = key_material.new_secret("secret", "live")
    stream = io.StringIO()
    logger = logging.getLogger("keyledger.test.library")
    logger.propagate = False
    handler = library_log_handler(stream)
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(f"Invalid header value char: b'Authorization: Bearer {secret}\\x01'")
        except ValueError:
            logger.exception("Error handling request from %s", secret)
        logger.info("below the handler's level %s", secret)
    finally:
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["logger"] == "keyledger.test.library" and record["level"] == "error"
    assert secret not in line and "[redacted]" in record["event"]
    assert "Invalid header value char" in record["exception"]
