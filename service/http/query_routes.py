"""The queries of SPEC §6: keys from ``key_views``, history and audit from the log.

A key that a consumer has quarantined (SPEC §10) shows it on its view as
``quarantined: {consumer: {position, event_type, reason, quarantined_at}}``;
when ``key_views`` has no row for it, the view is folded from the log.

Consistency: with ``min_position`` a read answers only once the projection
has applied that position (waiting up to 1 s, else 503 ``not_caught_up``).
Without it, a key read still waits briefly for the projection to reach the
log head it sees, so a caller reads its own writes; if the projection is
slow it answers from what it has rather than fail.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from events.codec import envelope_body
from events.models import Envelope
from projections.key_views import NAME as KEY_VIEWS
from projections.key_views import KeyViews
from service.clock import utc_now
from service.domain.orgs import SYSTEM_ORG
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.http import query_params as q
from service.http.context import POOL, TRUNCATION_GUARD, authenticate
from service.http.key_routes import path_key_id, visible_org
from service.http.read_side import PROJECTIONS
from service.key_view import render_key
from service.store.audit_chain import verify_chain
from service.store.audit_log import AuditFilter, find_events
from service.store.event_store import EventStore
from service.store.log_witnesses import audit_json
from service.store.quarantine import QuarantinedKey, QuarantineLog, is_transient
from service.verification.callers import Caller

routes = web.RouteTableDef()
CONSISTENCY_WAIT_SECONDS = 1.0
_views = KeyViews()
_store = EventStore()
_quarantine = QuarantineLog()


def envelope_json(envelope: Envelope) -> dict[str, Any]:
    """An envelope as SPEC §5 shows it, hash included."""
    return {**envelope_body(envelope), "hash": envelope.hash}


async def _reach(request: web.Request, min_position: int | None) -> None:
    """Wait until ``key_views`` has applied ``min_position`` (503 if it cannot in time)."""
    runner = request.app[PROJECTIONS]
    if min_position is not None:
        if not await runner.wait_for(KEY_VIEWS, min_position, CONSISTENCY_WAIT_SECONDS):
            raise KeyledgerError(
                "not_caught_up",
                f"position {min_position} is not readable yet; retry shortly",
                {"min_position": min_position, "position": runner.position(KEY_VIEWS)},
            )
        return
    async with request.app[POOL].acquire() as conn:
        head = await _store.head(conn)
    await runner.wait_for(KEY_VIEWS, head, CONSISTENCY_WAIT_SECONDS)


async def _reader(request: web.Request, scope: str) -> Caller:
    caller = await authenticate(request)
    caller.require(scope)
    return caller


def _matches(etag: str, if_none_match: str | None) -> bool:
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags


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
    async with request.app[POOL].acquire() as conn:
        views = await _views.page(conn, org_id, where, before=before, limit=limit + 1, now=now)
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
    async with request.app[POOL].acquire() as conn:
        view = await _views.get(conn, org_id, key_id)
        # Only this org's quarantines: another org's key stays invisible.
        quarantines = [e for e in await _quarantine.of_key(conn, key_id) if e.org_id == org_id]
        state = view.state if view is not None else None
        if state is None and quarantines:
            state = await _state_from_log(conn, org_id, key_id)
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


async def _state_from_log(conn: Any, org_id: str, key_id: str) -> KeyState | None:
    """The key folded from the log, for a key ``key_views`` has no row for; None if it cannot."""
    try:
        state = await _store.load_state(conn, key_id)
    except Exception as exc:
        if is_transient(exc):
            raise
        return None
    return state if state is not None and state.org_id == org_id else None


@routes.get("/v1/orgs/{org_id}/keys/{key_id}/events")
async def key_events(request: web.Request) -> web.Response:
    caller = await _reader(request, "keys:read")
    org_id = visible_org(request, caller)
    key_id = path_key_id(request)
    q.reject_unknown(request.query, ("min_position",))
    min_position = q.min_position_of(request.query)
    if min_position is not None:
        await _reach(request, min_position)
    async with request.app[POOL].acquire() as conn:
        envelopes = await _store.load_stream(conn, key_id)
    if not envelopes or envelopes[0].org_id != org_id:
        raise KeyledgerError("key_not_found", "no such key")
    return web.json_response({"data": [envelope_json(e) for e in envelopes]})


def _audit_filter(caller: Caller, query: Any) -> AuditFilter:
    org_id = q.audit_org_of(query)
    if org_id is not None and not caller.can_see_org(org_id):
        raise KeyledgerError("org_not_found", "no such org")
    since, until = q.timestamp_of(query, "since"), q.timestamp_of(query, "until")
    if since is not None and until is not None and since > until:
        raise KeyledgerError(
            "invalid_time_range",
            "since must not be after until",
            [{"loc": ["query", "since"], "msg": "since is after until"}],
        )
    return AuditFilter(
        org_id=org_id,
        key_id=q.audit_key_of(query),
        event_type=q.audit_event_type_of(query),
        actor=q.audit_actor_of(query),
        since=since,
        until=until,
        visible_orgs=caller.orgs,
        hidden_orgs=frozenset() if caller.can_see_org(SYSTEM_ORG) else frozenset({SYSTEM_ORG}),
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
    async with request.app[POOL].acquire() as conn:
        envelopes = await find_events(conn, where, after=after, limit=limit + 1)
    page = envelopes[:limit]
    next_cursor = page[-1].position if len(envelopes) > limit else None
    return web.json_response({"data": [envelope_json(e) for e in page], "next_cursor": next_cursor})


@routes.get("/v1/audit/verify")
async def audit_verify(request: web.Request) -> web.Response:
    await _reader(request, "audit:read")
    q.reject_unknown(request.query, ("min_position",))
    min_position = q.min_position_of(request.query)
    if min_position is not None:
        await _reach(request, min_position)
    async with request.app[POOL].acquire() as conn:
        report = await verify_chain(conn)
    # After the walk: a witness read later can only be further along, never a false alarm.
    witnesses = await request.app[TRUNCATION_GUARD].check()
    return web.json_response(audit_json(report, witnesses))
