"""NATS subject naming for published events (docs/events.md#nats-stream-subjects-headers).

Every part of a subject is checked: a token that NATS would refuse (empty,
with a ``.``, a wildcard, whitespace or a control character) raises
``ValueError`` here, with the offending part named, rather than deep inside
a publish, where the relay could only retry it forever.
"""

from __future__ import annotations

import re

DEFAULT_STREAM = "KEYLEDGER"
DEFAULT_PREFIX = "keyledger.events"
# Printable ASCII except the separator and the wildcards: what every NATS server and
# client takes as a literal token.
_TOKEN = re.compile(r"\A[\x21-\x29\x2b-\x2d\x2f-\x3d\x3f-\x7e]+\Z")


def is_subject_token(value: object) -> bool:
    """Whether ``value`` can be one literal token of a NATS subject."""
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def _checked(part: str, value: str) -> str:
    if not is_subject_token(value):
        raise ValueError(f"{part} {value!r} is not a valid NATS subject token")
    return value


def _checked_prefix(prefix: str) -> str:
    for token in prefix.split("."):
        _checked("subject prefix token", token)
    return prefix


def event_subject(org_id: str, key_id: str, event_type: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``keyledger.events.{org_id}.{key_id}.{event_type}``; ValueError for a bad token."""
    return (
        f"{_checked_prefix(prefix)}.{_checked('org_id', org_id)}"
        f".{_checked('key_id', key_id)}.{_checked('event_type', event_type)}"
    )


def subject_filter(
    *, org_id: str | None = None, event_type: str | None = None, prefix: str = DEFAULT_PREFIX
) -> str:
    """A subject filter for a consumer, ``*`` where a part is not given."""
    org = _checked("org_id", org_id) if org_id else "*"
    kind = _checked("event_type", event_type) if event_type else "*"
    return f"{_checked_prefix(prefix)}.{org}.*.{kind}"
