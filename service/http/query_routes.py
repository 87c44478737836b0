"""The read queries (docs/api.md#reads): keys from ``key_views``, history and audit from the log.

A key that a consumer has quarantined (docs/security.md §5) shows it on its view as
``quarantined: {consumer: {position, event_type, reason, quarantined_at}}``;
when ``key_views`` has no row for it, the view is folded from the log.

Consistency: with ``min_position`` a read answers only once the projection
has applied that position (waiting up to 1 s, else 503 ``not_caught_up``).
Without it, a key read still waits briefly for the projection to reach the
log head it sees, so a caller reads its own writes; if the projection is
slow it answers from what it has rather than fail.

History and audit show every row of the log in its place. A row the API
could not have written (it does not decode, names an unknown type, holds NUL
or a lone surrogate, a timestamp past 9999) is shown as a placeholder
(``unreadable: true`` with its position, stream version, event type, org and
key), never its data: one damaged row never makes the trail answer 500.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from events.codec import envelope_body
from events.models import Envelope
from service.clock import utc_now
from service.errors import KeyledgerError
from service.http import query_params as q
from service.http.context import authenticate, keyledger
from service.http.key_routes import path_key_id, visible_org
from service.key_view import render_key
from service.queries import (
    AuditFilter,
    KeyQueries,
    QuarantinedKey,
    UnreadableEvent,
    audit_filter,
    storable_name,
)
from service.verification.callers import Caller

routes = web.RouteTableDef()


def envelope_json(envelope: Envelope) -> dict[str, Any]:
    """An envelope as docs/events.md#the-envelope shows it, hash included."""
    return {**envelope_body(envelope), "hash": envelope.hash}


def logged_json(item: Envelope | UnreadableEvent) -> dict[str, Any]:
    """An event of the log as shown; an unreadable one as a placeholder (docs/security.md §5).

    The placeholder names where the row is and what it claims to be, never
    its data (which may be anything, a secret included).
    """
    if isinstance(item, Envelope):
        return envelope_json(item)
    return {
        "position": item.position,
        "stream_version": item.stream_version,
        "event_type": storable_name(item.event_type),
        "org_id": storable_name(item.org_id),
        "key_id": storable_name(item.key_id),
        "unreadable": True,
        "detail": "this event cannot be read; its key is set aside (quarantined)",
    }


def _queries(request: web.Request) -> KeyQueries:
    return keyledger(request).queries


async def _reach(request: web.Request, min_position: int | None) -> None:
    """Wait until ``key_views`` has applied ``min_position`` (503 if it cannot in time)."""
    await _queries(request).reach(min_position)


async def _reader(request: web.Request, scope: str) -> Caller:
    caller = await authenticate(request)
    caller.require(scope)
    return caller


def _matches(etag: str, if_none_match: str | None) -> bool:
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags


@routes.get("/v1/me")
async def me(request: web.Request) -> web.Response:
    """The calling service key: its id, scopes and orgs (any valid key may ask)."""
    caller = await authenticate(request)
    q.reject_unknown(request.query, ())
    orgs = sorted(caller.orgs) if caller.orgs is not None else None
    return web.json_response({"id": caller.key_id, "scopes": sorted(caller.scopes), "orgs": orgs})


@routes.get("/v1/orgs/{org_id}/keys")
async def list_keys(request: web.Request) -> web.Response:
    caller = await _reader(request, "keys:read")
    org_id = visible_org(request, caller)
    query = request.query
    q.reject_unknown(query, q.KEY_LIST_PARAMS)
    where = q.key_filter_of(query)
    limit = q.limit_of(query, default=20, maximum=100)
    before = q.decode_key_cursor(query.get("cursor"), org_id, where)
    await _reach(request, q.min_position_of(query))
    now = utc_now()
    views = await _queries(request).key_page(org_id, where, before=before, limit=limit + 1, now=now)
    page = views[:limit]
    next_cursor = (
        q.encode_key_cursor(org_id, where, page[-1].state.key_id) if len(views) > limit else None
    )
    return web.json_response(
        {"data": [view.render(now) for view in page], "next_cursor": next_cursor}
    )


@routes.get("/v1/orgs/{org_id}/keys/{key_id}")
async def get_key(request: web.Request) -> web.Response:
    caller = await _reader(request, "keys:read")
    org_id = visible_org(request, caller)
    key_id = path_key_id(request)
    q.reject_unknown(request.query, ("min_position",))
    await _reach(request, q.min_position_of(request.query))
    reading = await _queries(request).key(org_id, key_id)
    view, state, quarantines = reading.view, reading.state, reading.quarantines
    if state is None:
        if quarantines:
            raise KeyledgerError(
                "key_quarantined",
                "this key's events cannot be shown: they have been set aside",
                {"quarantined": _quarantine_json(quarantines)},
            )
        raise KeyledgerError("key_not_found", "no such key")
    etag = f'"{state.version}"'
    if _matches(etag, request.headers.get("If-None-Match")):
        return web.Response(status=304, headers={"ETag": etag})
    now = utc_now()
    body = view.render(now) if view is not None else render_key(state, now)
    if quarantines:
        body["quarantined"] = _quarantine_json(quarantines)
    return web.json_response(body, headers={"ETag": etag})


def _quarantine_json(entries: list[QuarantinedKey]) -> dict[str, Any]:
    return {entry.consumer: entry.to_json() for entry in entries}


@routes.get("/v1/orgs/{org_id}/keys/{key_id}/events")
async def key_events(request: web.Request) -> web.Response:
    caller = await _reader(request, "keys:read")
    org_id = visible_org(request, caller)
    key_id = path_key_id(request)
    q.reject_unknown(request.query, ("min_position",))
    min_position = q.min_position_of(request.query)
    if min_position is not None:
        await _reach(request, min_position)
    stream = await _queries(request).key_events(org_id, key_id)
    return web.json_response({"data": [logged_json(item) for item in stream]})


def _audit_filter(caller: Caller, query: Any) -> AuditFilter:
    return audit_filter(
        caller,
        org_id=q.audit_org_of(query),
        key_id=q.audit_key_of(query),
        event_type=q.audit_event_type_of(query),
        actor=q.audit_actor_of(query),
        since=q.timestamp_of(query, "since", ends_allowed=True),
        until=q.timestamp_of(query, "until", ends_allowed=True),
    )


@routes.get("/v1/audit")
async def audit(request: web.Request) -> web.Response:
    caller = await _reader(request, "audit:read")
    query = request.query
    q.reject_unknown(query, q.AUDIT_PARAMS)
    where = _audit_filter(caller, query)
    after = q.position_of(query, "after", "invalid_cursor") or 0
    limit = q.limit_of(query, default=100, maximum=1000)
    min_position = q.min_position_of(query)
    if min_position is not None:
        await _reach(request, min_position)
    found = await _queries(request).audit_events(where, after=after, limit=limit + 1)
    page = found[:limit]
    next_cursor = page[-1].position if len(found) > limit else None
    return web.json_response({"data": [logged_json(e) for e in page], "next_cursor": next_cursor})


@routes.get("/v1/audit/verify")
async def audit_verify(request: web.Request) -> web.Response:
    caller = await _reader(request, "audit:read")
    if caller.orgs is not None:
        # The chain spans every tenant: its length and head hash are not one org's to see.
        raise KeyledgerError(
            "insufficient_scope",
            "walking the whole log needs an audit:read key without an org list",
            {"required_scope": "audit:read"},
        )
    q.reject_unknown(request.query, ("min_position",))
    min_position = q.min_position_of(request.query)
    if min_position is not None:
        await _reach(request, min_position)
    return web.json_response(await _queries(request).verify_log())
