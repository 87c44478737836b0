"""The reads: keys, a key's events, the caller, the live event stream, and the audit log."""

from __future__ import annotations

from events.models import EVENT_TYPES
from events.vocabulary import ENVIRONMENTS, KEY_TYPES, STATUSES
from service.http import response_shapes as shapes
from service.http.api_operations import (
    ACTOR,
    AUTHENTICATED,
    KEY,
    KEY_ID_SCHEMA,
    KEY_PATH,
    MIN_POSITION,
    ORG,
    ORG_PATH,
    POSITION,
    READ,
    Operation,
    param,
)
from service.http.api_operations.headers import ETAG
from service.http.event_stream_routes import HEARTBEAT_HEADER
from service.settings import Settings

# The stream's Keyledger-Heartbeat-Seconds header: the setting it reports, with its bounds.
_HEARTBEAT_SECONDS = {
    word: rule
    for word, rule in Settings.model_json_schema()["properties"][
        "event_stream_heartbeat_seconds"
    ].items()
    if word in ("type", "exclusiveMinimum", "maximum")
}

KEY_READS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/v1/orgs/{org_id}/keys",
        "List keys, newest first",
        "queries",
        parameters=[
            ORG_PATH,
            param("query", "status", {"type": "string", "enum": list(STATUSES)}, "Filter."),
            param("query", "type", {"type": "string", "enum": list(KEY_TYPES)}, "Filter."),
            param(
                "query", "environment", {"type": "string", "enum": list(ENVIRONMENTS)}, "Filter."
            ),
            param(
                "query",
                "identity",
                {"type": "string", "minLength": 1, "maxLength": 128},
                "One identity's keys (also accepted as `identity_id`).",
            ),
            param("query", "limit", {"type": "integer", "minimum": 1, "maximum": 100}, "1-100."),
            param("query", "cursor", {"type": "string"}, "A `next_cursor` of this list."),
            MIN_POSITION,
        ],
        answers={"200": shapes.KeyPage},
        errors=READ,
        name="listKeys",
    ),
    Operation(
        "get",
        KEY,
        "One key (with ETag)",
        "queries",
        parameters=[
            ORG_PATH,
            KEY_PATH,
            MIN_POSITION,
            param("header", "If-None-Match", {"type": "string"}, "304 when it matches."),
        ],
        answers={"200": shapes.Key, "304": None},
        # get_key: the ETag on the answer and on its 304 alike.
        answer_headers={"200": ETAG, "304": ETAG},
        errors=(*READ, "409"),  # 409 key_quarantined: not even the log folds (docs/security.md §5)
        name="getKey",
    ),
    Operation(
        "get",
        f"{KEY}/events",
        "A key's events in stream order (a row that cannot be read: a placeholder with"
        " `unreadable: true`, never its data)",
        "queries",
        parameters=[ORG_PATH, KEY_PATH, MIN_POSITION],
        answers={"200": shapes.KeyEvents},
        errors=READ,
        name="keyEvents",
    ),
    Operation(
        "get",
        "/v1/me",
        "The calling service key: its id, scopes and orgs (null: every org)",
        "queries",
        answers={"200": shapes.Caller},
        errors=AUTHENTICATED,
        name="me",
    ),
    Operation(
        "get",
        "/v1/orgs/{org_id}/events/stream",
        "An org's events, live, as server-sent events (`id:` the position, `event:` the type,"
        " `data:` the envelope without `data.secret_hash`); `Last-Event-ID` resumes after a"
        " position; `: heartbeat` comments; `event: close` names why a stream ended",
        "queries",
        parameters=[
            ORG_PATH,
            param(
                "header",
                "Last-Event-ID",
                {"type": "string", "pattern": "^[0-9]{1,18}$"},
                "Resume after this log position (the id of the last event received).",
            ),
        ],
        errors=READ,
        media=(("text/event-stream",), "The stream (never ends by itself)"),
        answer_headers={
            "200": {
                HEARTBEAT_HEADER: {
                    "description": "Seconds between heartbeats (KEYLEDGER_EVENT_STREAM_HEARTBEAT"
                    "_SECONDS): a stream silent much longer than this has stalled; reconnect.",
                    "required": True,
                    "schema": _HEARTBEAT_SECONDS,
                }
            }
        },
        name="streamEvents",
    ),
)

AUDIT: tuple[Operation, ...] = (
    Operation(
        "get",
        "/v1/audit",
        "Events in position order (scope audit:read; a row that cannot be read: a placeholder"
        " with `unreadable: true`, never its data)",
        "audit",
        parameters=[
            param("query", "org_id", ORG, "Filter."),
            param("query", "key_id", KEY_ID_SCHEMA, "Filter."),
            param("query", "event_type", {"type": "string", "enum": list(EVENT_TYPES)}, "Filter."),
            param("query", "actor", ACTOR, "Filter."),
            param("query", "since", {"type": "string", "format": "date-time"}, "From (incl.)."),
            param("query", "until", {"type": "string", "format": "date-time"}, "Until (incl.)."),
            param("query", "after", POSITION, "A `next_cursor`."),
            param("query", "limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "1-1000."),
            MIN_POSITION,
        ],
        answers={"200": shapes.AuditPage},
        errors=READ,
        name="searchAudit",
    ),
    Operation(
        "get",
        "/v1/audit/verify",
        "Walk the hash chain",
        "audit",
        parameters=[MIN_POSITION],
        answers={"200": shapes.ChainReport},
        errors=READ,
        name="verifyAuditChain",
    ),
)
