"""Webhook endpoints over HTTP (docs/api.md#webhooks): register, list, remove, deliveries.

Registering or removing an endpoint takes the ``admin`` scope (an endpoint
receives every event of its org) and is an event in the log
(``WebhookRegistered``, ``WebhookRemoved``, with the caller as actor); reading
them takes ``audit:read``. Both commands honour ``Idempotency-Key`` as every
command does (``service.webhooks.registration``).
"""

from __future__ import annotations

from aiohttp import web

from service.domain.webhooks import subscribed_event_types
from service.errors import KeyledgerError
from service.http import query_params as q
from service.http.body import read_model
from service.http.context import authenticate, keyledger
from service.http.key_routes import command_request, visible_org
from service.http.schemas import RegisterWebhookBody
from service.webhooks.endpoints import Endpoint, is_webhook_id
from service.webhooks.receivers import checked_url
from service.webhooks.registration import WebhookOutcome

routes = web.RouteTableDef()
DELIVERY_PARAMS = ("limit", "before")


def _webhook_id(request: web.Request) -> str:
    webhook_id = request.match_info["webhook_id"]
    if not is_webhook_id(webhook_id):
        raise KeyledgerError("webhook_not_found", "no such webhook")
    return webhook_id


async def _readable(request: web.Request) -> Endpoint:
    caller = await authenticate(request)
    caller.require("audit:read")
    org_id = visible_org(request, caller)
    return await keyledger(request).webhooks.get(org_id, _webhook_id(request))


def _response(outcome: WebhookOutcome) -> web.Response:
    return web.json_response(outcome.answer(), status=outcome.status)


@routes.post("/v1/orgs/{org_id}/webhooks")
async def register_webhook(request: web.Request) -> web.Response:
    ctx = await command_request(request, "admin")
    body, raw = await read_model(request, RegisterWebhookBody)
    service = keyledger(request)
    url = checked_url(body.url, allow_private=service.settings.webhooks_allow_private)
    event_types = subscribed_event_types(body.event_types)
    issuer = ctx.issuer_of(request, raw)
    # The first answer is the only time the signing secret is handed out (a replay: null).
    return _response(await service.registrations.register(issuer, url, event_types))


@routes.get("/v1/orgs/{org_id}/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    caller.require("audit:read")
    org_id = visible_org(request, caller)
    q.reject_unknown(request.query, ())
    endpoints = await keyledger(request).webhooks.of_org(org_id)
    return web.json_response({"data": [endpoint.public() for endpoint in endpoints]})


@routes.get("/v1/orgs/{org_id}/webhooks/{webhook_id}")
async def get_webhook(request: web.Request) -> web.Response:
    q.reject_unknown(request.query, ())
    return web.json_response({"webhook": (await _readable(request)).public()})


@routes.delete("/v1/orgs/{org_id}/webhooks/{webhook_id}")
async def remove_webhook(request: web.Request) -> web.Response:
    ctx = await command_request(request, "admin")
    webhook_id = _webhook_id(request)
    # No body: a retry is the same request when its method and path are.
    issuer = ctx.issuer_of(request, None)
    return _response(await keyledger(request).registrations.remove(issuer, webhook_id))


@routes.get("/v1/orgs/{org_id}/webhooks/{webhook_id}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    endpoint = await _readable(request)
    query = request.query
    q.reject_unknown(query, DELIVERY_PARAMS)
    limit = q.limit_of(query, default=50, maximum=500)
    before = q.attempt_id_of(query)
    attempts = await keyledger(request).deliveries.listing(
        endpoint.webhook_id, limit=limit, before=before
    )
    next_before = attempts[-1]["id"] if len(attempts) == limit else None
    return web.json_response({"data": attempts, "next_before": next_before})
