"""``GET /v1/orgs/{org}/keys/{key_id}/usage``: verifications over time.

See docs/api.md#usage-analytics.
"""

from __future__ import annotations

from aiohttp import web

from service.clock import utc_now
from service.http import query_params as q
from service.http.context import authenticate, keyledger
from service.http.key_routes import path_key_id, visible_org
from service.usage_analytics import GRANULARITIES, UsageWindow

routes = web.RouteTableDef()
USAGE_PARAMS = ("since", "until", "granularity")


@routes.get("/v1/orgs/{org_id}/keys/{key_id}/usage")
async def key_usage(request: web.Request) -> web.Response:
    caller = await authenticate(request)
    caller.require("keys:read")
    org_id = visible_org(request, caller)
    key_id = path_key_id(request)
    query = request.query
    q.reject_unknown(query, USAGE_PARAMS)
    granularity = q.choice_of(query, "granularity", GRANULARITIES, "validation_error") or "hour"
    window = UsageWindow.of(
        granularity,
        q.timestamp_of(query, "since", ends_allowed=True),
        q.timestamp_of(query, "until", ends_allowed=True),
        utc_now(),
    )
    series = await keyledger(request).analytics.series(org_id, key_id, window)
    return web.json_response({"granularity": granularity, "series": series})
