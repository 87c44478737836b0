"""NATS subject naming for published events (SPEC §5)."""

from __future__ import annotations

DEFAULT_STREAM = "KEYLEDGER"
DEFAULT_PREFIX = "keyledger.events"


def event_subject(org_id: str, key_id: str, event_type: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``keyledger.events.{org_id}.{key_id}.{event_type}``."""
    return f"{prefix}.{org_id}.{key_id}.{event_type}"


def subject_filter(
    *, org_id: str | None = None, event_type: str | None = None, prefix: str = DEFAULT_PREFIX
) -> str:
    """A subject filter for a consumer, ``*`` where a part is not given."""
    return f"{prefix}.{org_id or '*'}.*.{event_type or '*'}"
