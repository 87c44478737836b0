"""The input vocabulary: what an identifier, a text, a number or an instant may be.

Everything a request can carry into an event, a query or a log line is
checked here, in one place, so that what the API accepts is exactly what the
event store (PostgreSQL ``json``/``jsonb``/``text``), ``events.decode`` and
the NATS subject builder accept too (docs/security.md §1 has the table):

- Identifiers (org ids, key ids, scopes, origins, actor ids, request ids,
  positions) are matched whole: every pattern is anchored with ``\\A…\\Z`` and
  used with ``re.fullmatch``, so a trailing ``\\n`` is never a match.
- Text refuses lone surrogates (they cannot be encoded as UTF-8) and control
  characters (Unicode category Cc: U+0000–U+001F and U+007F–U+009F; NUL cannot
  be stored in PostgreSQL ``text``/``jsonb``). String values inside ``metadata``
  may keep tab, newline and carriage return.
- ``metadata`` nests at most ``MAX_METADATA_DEPTH`` levels: the metadata object
  itself is level 0 and every object or array inside it is one level deeper
  than its parent, so ``{"a": {"b": [1]}}`` is 2 levels deep.
- Numbers given as text are ASCII digits, at most 18 of them (they fit a
  PostgreSQL ``bigint``); ``"²"`` or ``"١"`` are not numbers here.
- Instants carry a timezone and stay within years 1–9999 once converted to UTC
  (the very first and last microsecond excluded: PostgreSQL drivers map them
  to -infinity/infinity).

Refusals raise ``ValueError`` with a message that never repeats the input
(it may be a secret); the HTTP layer turns them into 4xx answers.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints
from pydantic_core import PydanticCustomError

MAX_METADATA_DEPTH = 8
MAX_METADATA_BYTES = 4096
MAX_DIGITS = 18


@dataclass(frozen=True)
class Identifier:
    """A closed vocabulary of identifiers, matched whole (never by prefix)."""

    body: str  # the regular expression, without anchors
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # \A…\Z even under fullmatch: a caller that uses .match by mistake stays whole too.
        object.__setattr__(self, "regex", re.compile(rf"\A(?:{self.body})\Z"))

    def matches(self, value: object) -> bool:
        """Whether ``value`` is a string that is, as a whole, one of these identifiers."""
        return isinstance(value, str) and self.regex.fullmatch(value) is not None

    @property
    def json_pattern(self) -> str:
        """The same pattern for JSON Schema / OpenAPI (ECMA-262: ``$`` is the very end)."""
        return f"^(?:{self.body})$"


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# A tenant: it becomes a NATS subject token. (The reserved ``_system`` org is in orgs.py.)
ORG_ID = Identifier(r"[a-z0-9][a-z0-9_-]{0,62}")
# ``key_`` + a 26-character ULID (its first character is at most 7: 128 bits).
KEY_ID = Identifier(r"key_[0-7][0-9A-HJKMNP-TV-Z]{25}")
SCOPE = Identifier(r"[a-z][a-z0-9_.:*-]{0,63}")
# scheme://host[:port], lower case, no path and no trailing slash.
ORIGIN = Identifier(rf"https?://(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::[0-9]{{1,5}})?")
# An actor id as the audit query takes it: a service key id or another printable id.
ACTOR_ID = Identifier(r"[\x21-\x7e]{1,255}")
# X-Request-Id: a well-formed one is kept, anything else is replaced by a generated id.
REQUEST_ID = Identifier(r"[A-Za-z0-9._:-]{1,128}")
# Header-borne text that ends up in events (X-On-Behalf-Of, Idempotency-Key):
# printable ASCII, not starting with a space, at most 255 characters.
HEADER_TEXT = Identifier(r"[\x21-\x7e][\x20-\x7e]{0,254}")
# A presented credential (bearer secret, service key): printable ASCII. Anything else
# is refused as unauthenticated before it is hashed, looked up or logged.
CREDENTIAL = Identifier(r"[\x21-\x7e]{1,1024}")
DIGITS = Identifier(rf"[0-9]{{1,{MAX_DIGITS}}}")
# A named rate limit's name (``default`` is the single ``rate_limit``).
LIMIT_NAME = Identifier(r"[a-z0-9][a-z0-9_.-]{0,63}")
# An IPv4 or IPv6 network as text, before ``ipaddress`` judges it (no zone, no spaces).
CIDR_TEXT = Identifier(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINE_BREAKS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# JSON Schema for plain text: no Cc character (lone surrogates cannot be written in JSON
# Schema; they are refused all the same).
PLAIN_TEXT_JSON_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"


# -- text ------------------------------------------------------------------------


def text_problem(value: str, *, line_breaks: bool = False) -> str | None:
    """Why ``value`` cannot be stored as text, or None when it can.

    ``line_breaks`` allows tab, newline and carriage return (metadata values).
    """
    if _SURROGATE.search(value):
        return "must not contain lone surrogates (text must be valid Unicode)"
    control = _CONTROL_BUT_LINE_BREAKS if line_breaks else _CONTROL
    if control.search(value):
        allowed = " other than tab, newline and carriage return" if line_breaks else ""
        return f"must not contain control characters{allowed} (Unicode category Cc)"
    return None


def is_unicode(value: str) -> bool:
    """Whether ``value`` encodes as UTF-8 (no lone surrogate, e.g. from a raw 0xFF byte)."""
    return _SURROGATE.search(value) is None


def plain_text(value: str) -> str:
    """``value`` if it has no control character and no lone surrogate, else ValueError."""
    problem = text_problem(value)
    if problem:
        raise ValueError(f"text {problem}")
    return value


def name_text(value: str) -> str:
    """A key name: plain text that is not blank."""
    plain_text(value)
    if not value.strip():
        raise ValueError("the name must not be blank")
    return value


# -- metadata --------------------------------------------------------------------


def metadata_problem(metadata: dict[str, Any]) -> str | None:
    """Why ``metadata`` cannot be stored and decoded as it is, or None.

    Walks the value without recursion (it may be nested as deep as the JSON
    parser allowed): depth, keys, string values, numbers.
    """
    pending: list[tuple[Any, int]] = [(metadata, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            if depth > MAX_METADATA_DEPTH:
                return f"metadata nests at most {MAX_METADATA_DEPTH} levels"
            for key, item in value.items():
                if not isinstance(key, str):
                    return "metadata keys are strings"
                problem = text_problem(key)
                if problem:
                    return f"a metadata key {problem}"
                pending.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_METADATA_DEPTH:
                return f"metadata nests at most {MAX_METADATA_DEPTH} levels"
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            problem = text_problem(value, line_breaks=True)
            if problem:
                return f"a metadata string {problem}"
        elif isinstance(value, float) and not math.isfinite(value):
            return "metadata numbers are finite"
        elif value is not None and not isinstance(value, bool | int | float):
            return "metadata holds JSON values only"
    return None


def metadata_value(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` if it is storable, decodable and at most 4 KiB of JSON, else ValueError."""
    problem = metadata_problem(metadata)
    if problem:
        raise ValueError(problem)
    # Depth is bounded by now, so encoding cannot exhaust the stack.
    if len(_compact_json(metadata)) > MAX_METADATA_BYTES:
        raise ValueError("metadata must be at most 4 KiB of JSON")
    return metadata


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# -- identifiers with rules beyond their pattern -----------------------------------


def granted_scope(value: str) -> str:
    """A scope a key is granted: the pattern, and ``*`` only as a suffix wildcard."""
    if not SCOPE.matches(value):
        raise ValueError("a scope is lower-case letters, digits and _.:- (at most 64)")
    if "*" in value and (value.count("*") > 1 or not value.endswith("*")):
        raise ValueError("'*' is only allowed as the last character of a scope")
    return value


def requested_scope(value: str) -> str:
    """A scope a verify request asks for."""
    if not SCOPE.matches(value):
        raise ValueError("a scope is lower-case letters, digits and _.:*- (at most 64)")
    return value


def origin(value: str) -> str:
    """An exact browser origin, lower-cased: ``scheme://host[:port]``."""
    # ASCII first: some non-ASCII letters lower-case into ASCII ones (U+212A → "k").
    lowered = value.lower() if value.isascii() else ""
    if not ORIGIN.matches(lowered):
        raise ValueError("an origin is scheme://host[:port], without path or trailing slash")
    port = lowered.rpartition(":")[2] if lowered.count(":") > 1 else ""
    if port.isdigit() and int(port) > 65535:
        raise ValueError("an origin's port is at most 65535")
    return lowered


def identity_id(value: str) -> str:
    """An identity id from the customer's own system: 1-128 characters of plain text."""
    plain_text(value)
    if not value.strip():
        raise ValueError("an identity id must not be blank")
    return value


def cidr(value: str) -> str:
    """An IPv4 or IPv6 network (a bare address is a /32 or /128), in canonical form.

    Host bits must be zero (``10.0.0.1/8`` is refused, not silently widened or narrowed).
    An IPv4-mapped IPv6 network (``::ffff:192.168.0.0/112``) is kept as its IPv4 one
    (``192.168.0.0/16``): addresses are compared in their IPv4 form, so it would never match.
    """
    if not CIDR_TEXT.matches(value):
        raise ValueError("a network is an IPv4 or IPv6 address with an optional /prefix")
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(
            "a network is an IPv4 or IPv6 address with an optional /prefix, host bits zero"
        ) from exc
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None  # inside ::ffff:0:0/96
        return str(ipaddress.IPv4Network((mapped, network.prefixlen - 96)))
    return str(network)


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def limit_name(value: str) -> str:
    """A rate limit's name: lower-case letters, digits and _.- (at most 64)."""
    if not LIMIT_NAME.matches(value):
        raise ValueError("a limit name is 1-64 of a-z, 0-9, _ . -, starting with a letter or digit")
    return value


# -- numbers and instants ----------------------------------------------------------


def ascii_integer(raw: str) -> int | None:
    """The value of at most 18 ASCII digits, or None for anything else."""
    return int(raw) if DIGITS.matches(raw) else None


_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def instant_text(value: object) -> object:
    """Only an ISO-8601 date and time is an instant in a body: not a number of seconds or
    milliseconds (pydantic's lax reading of ``99999999999999`` is a date in year 5138)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE_TIME.match(value):
        raise PydanticCustomError(
            "datetime_type", "Input should be an ISO-8601 date and time with a timezone"
        )
    return value


def bounded_instant(moment: datetime) -> datetime:
    """``moment`` as given, if it has a timezone and stays within years 1–9999 in UTC.

    Else ValueError: a naive instant is ambiguous, and one that leaves the
    range once converted would raise OverflowError wherever it is compared,
    formatted or stored.
    """
    utc = instant_in_range(moment)
    if utc.replace(tzinfo=None) in (datetime.min, datetime.max):
        # asyncpg writes these two as -infinity/infinity and reads them back naive.
        raise ValueError("an instant must be strictly inside years 1-9999 in UTC")
    return moment


def instant_in_range(moment: datetime) -> datetime:
    """``moment`` in UTC, if it has a timezone and is within years 1–9999 in UTC, ends included.

    Else ValueError. The ends are fit for a range bound that is never stored
    (a query's ``since``/``until``), not for a value written to the log.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("an instant needs a timezone (e.g. 2030-01-01T00:00:00Z)")
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("an instant must be within years 1-9999 in UTC") from exc


_INSTANT_TEXT = re.compile(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]{1,9})?)?)?"
    r"(?:Z|z|[+-][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:\.[0-9]{1,6})?)?)?)?)?\Z"
)


def parse_instant(raw: str, *, ends_allowed: bool = False) -> datetime:
    """An ISO-8601 instant with a timezone (``bounded_instant``); ValueError otherwise.

    ``ends_allowed``: year 1's first and year 9999's last instant are accepted
    too (``instant_in_range``), for range bounds that are never stored.
    """
    # ``datetime.fromisoformat`` stops at a NUL and ignores what follows: match it whole first.
    if not _INSTANT_TEXT.fullmatch(raw):
        raise ValueError("an instant is ISO-8601 with a timezone, e.g. …Z")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError("an instant is ISO-8601 with a timezone, e.g. …Z") from exc
    if ends_allowed:
        instant_in_range(moment)
        return moment
    return bounded_instant(moment)


# -- request-body types (pydantic), built from the rules above ----------------------

# Documented in the JSON Schema; enforced by the validators (with a clearer message).
PLAIN_TEXT = Field(json_schema_extra={"pattern": PLAIN_TEXT_JSON_PATTERN})
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=100), AfterValidator(name_text), PLAIN_TEXT
]
Resource = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(plain_text), PLAIN_TEXT
]
Reason = Annotated[
    str, StringConstraints(min_length=1, max_length=500), AfterValidator(plain_text), PLAIN_TEXT
]
GrantedScope = Annotated[
    str, AfterValidator(granted_scope), Field(json_schema_extra={"pattern": SCOPE.json_pattern})
]
RequestedScope = Annotated[
    str, AfterValidator(requested_scope), Field(json_schema_extra={"pattern": SCOPE.json_pattern})
]
Origin = Annotated[
    str,
    StringConstraints(max_length=300),
    AfterValidator(origin),
    Field(description="scheme://host[:port] (ASCII; stored lower-cased), no path."),
]
Metadata = Annotated[
    dict[str, Any],
    AfterValidator(metadata_value),
    Field(
        description=(
            f"A JSON object of at most {MAX_METADATA_BYTES} bytes, nested at most"
            f" {MAX_METADATA_DEPTH} levels (each object or array inside it is one level);"
            " keys without control characters, string values with tab, newline and"
            " carriage return as their only control characters."
        )
    ),
]
Instant = Annotated[datetime, BeforeValidator(instant_text), AfterValidator(bounded_instant)]
IdentityId = Annotated[
    str, StringConstraints(min_length=1, max_length=128), AfterValidator(identity_id), PLAIN_TEXT
]
Cidr = Annotated[
    str,
    StringConstraints(max_length=50),
    AfterValidator(cidr),
    Field(description="An IPv4 or IPv6 network (10.0.0.0/8, 2001:db8::/32) or one address."),
]
LimitName = Annotated[
    str, AfterValidator(limit_name), Field(json_schema_extra={"pattern": LIMIT_NAME.json_pattern})
]
