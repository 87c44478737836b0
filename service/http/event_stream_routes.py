"""``GET /v1/orgs/{org}/events/stream``: an org's events as server-sent events.

Read like the other reads (``keys:read``, the org must be visible to the
caller). Each event is written as::

    id: <position>
    event: <event_type>
    data: <the envelope as JSON, without secret hashes>

Live events come from this replica's fan-out (``service.event_stream``),
which the verification index feeds with every event it applies; nothing
polls the database per client. A ``Last-Event-ID`` header (a log position,
which is each event's ``id``) resumes: the events of the org after it are
read from the log once, then the live ones follow, none twice, none
missed. A comment line every ``KEYLEDGER_EVENT_STREAM_HEARTBEAT_SECONDS``
keeps proxies from closing an idle stream, and is when the caller's key is
checked again: a key revoked or disabled meanwhile ends its stream.

A stream ends with an ``event: close`` whose data names why: ``slow`` (the
client fell ``KEYLEDGER_EVENT_STREAM_BUFFER`` events behind and was dropped
so that others never wait), ``shutdown`` (the replica stops),
``unauthorized`` (the caller's key no longer allows it). The client
reconnects with the last ``id`` it received.
"""

from __future__ import annotations

import json

from aiohttp import web

from events.models import WEBHOOK_EVENT_TYPES, Envelope
from service.errors import KeyledgerError
from service.event_stream import EventFanout, Watcher, public_envelope
from service.http import query_params as q
from service.http.context import authenticate, keyledger
from service.http.key_routes import visible_org
from service.http.request_context import request_id_of
from service.queries import audit_filter
from service.verification.callers import Caller

routes = web.RouteTableDef()

# Events read from the log per round trip when resuming.
RESUME_PAGE = 500
# The largest position a Last-Event-ID may name (a log position is a bigint).
MAX_POSITION = 2**63 - 1
# Lets a reader tell a stalled connection (silent too long) from a quiet one.
HEARTBEAT_HEADER = "Keyledger-Heartbeat-Seconds"


def sse_message(envelope: Envelope) -> bytes:
    """One event in the text/event-stream format (JSON never holds a raw newline)."""
    data = json.dumps(public_envelope(envelope), separators=(",", ":"), ensure_ascii=False)
    return f"id: {envelope.position}\nevent: {envelope.event_type}\ndata: {data}\n\n".encode()


def _close_message(reason: str) -> bytes:
    return f'event: close\ndata: {{"reason":"{reason}"}}\n\n'.encode()


def last_event_id(request: web.Request) -> int | None:
    """The position to resume after (``Last-Event-ID``), or None to start with live events."""
    values = request.headers.getall("Last-Event-ID", [])
    if not values or values == [""]:
        return None
    value = values[0].strip()
    if len(values) > 1 or not value.isascii() or not value.isdigit() or int(value) > MAX_POSITION:
        raise KeyledgerError(
            "invalid_header",
            "Last-Event-ID must be one event id (a log position: a non-negative integer)",
            {"header": "Last-Event-ID"},
        )
    return int(value)


async def _watcher_of(request: web.Request) -> tuple[Caller, str, int | None]:
    caller = await authenticate(request)
    caller.require("keys:read")
    org_id = visible_org(request, caller)
    q.reject_unknown(request.query, ())
    after = last_event_id(request)
    # A position another replica handed out a moment ago may not have reached this one.
    if after is not None and not await keyledger(request).feed.wait_for(after, 1.0):
        raise KeyledgerError(
            "not_caught_up",
            "this replica has not reached the Last-Event-ID position yet; retry",
            {"position": after},
        )
    return caller, org_id, after


def _shown(caller: Caller, envelope: Envelope) -> bool:
    """Whether ``caller`` may see ``envelope`` here.

    The stream needs only ``keys:read``, but webhook endpoints (their URLs) are listed
    only to ``audit:read``: their events stay out of a narrower caller's stream.
    """
    return envelope.event_type not in WEBHOOK_EVENT_TYPES or caller.has_scope("audit:read")


async def _still_allowed(request: web.Request, org_id: str) -> bool:
    """Whether the caller's key still reads ``org_id`` (checked at each heartbeat)."""
    try:
        caller = await authenticate(request)
        caller.require("keys:read")
    except KeyledgerError:
        return False
    return caller.can_see_org(org_id)


@routes.get("/v1/orgs/{org_id}/events/stream")
async def event_stream(request: web.Request) -> web.StreamResponse:
    caller, org_id, after = await _watcher_of(request)
    service = keyledger(request)
    fanout: EventFanout = service.fanout
    # Watch before reading the log: whatever commits meanwhile is in one or the other.
    watcher = fanout.watch(org_id)
    heartbeat = service.settings.event_stream_heartbeat_seconds
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                "X-Request-Id": request_id_of(request),
                HEARTBEAT_HEADER: f"{heartbeat:g}",
            }
        )
        await response.prepare(request)
        # Tells EventSource-style clients how long to wait before reconnecting.
        await response.write(b"retry: 1000\n\n")
        sent = after or 0
        if after is not None:
            sent = await _resume(request, response, caller, org_id, after)
        await _follow(request, response, caller, watcher, org_id, sent)
        return response
    except (ConnectionResetError, ConnectionError):
        # The client went away; nothing to tell it.
        return response
    finally:
        fanout.forget(watcher)


async def _resume(
    request: web.Request, response: web.StreamResponse, caller: Caller, org_id: str, after: int
) -> int:
    """Write the org's logged events after ``after``; the last position written."""
    where = audit_filter(
        caller, org_id=org_id, key_id=None, event_type=None, actor=None, since=None, until=None
    )
    queries = keyledger(request).queries
    sent = after
    while True:
        page = await queries.audit_events(where, after=sent, limit=RESUME_PAGE)
        for item in page:
            # An unreadable row is never shown here (its data may be anything).
            if isinstance(item, Envelope) and _shown(caller, item):
                await response.write(sse_message(item))
            sent = item.position
        if len(page) < RESUME_PAGE:
            return sent


async def _follow(
    request: web.Request,
    response: web.StreamResponse,
    caller: Caller,
    watcher: Watcher,
    org_id: str,
    sent: int,
) -> None:
    heartbeat = keyledger(request).settings.event_stream_heartbeat_seconds
    while True:
        try:
            envelope = await watcher.next(heartbeat)
        except TimeoutError:
            if not await _still_allowed(request, org_id):
                await response.write(_close_message("unauthorized"))
                return
            await response.write(b": heartbeat\n\n")
            continue
        if envelope is None:
            await response.write(_close_message(watcher.closed_because or "closed"))
            return
        if envelope.position > sent:  # already sent while resuming
            if _shown(caller, envelope):
                await response.write(sse_message(envelope))
            sent = envelope.position
