"""The aiohttp application: the routes, and the service (``service.bootstrap``) it runs."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from service.bootstrap import running
from service.http import (
    console_routes,
    event_stream_routes,
    health_routes,
    identity_routes,
    key_routes,
    key_usage_routes,
    leak_routes,
    metrics,
    openapi,
    query_routes,
    usage_routes,
    verify_routes,
    webhook_routes,
)
from service.http.body import MAX_BODY_BYTES
from service.http.context import KEYLEDGER, SETTINGS
from service.http.metrics import install_metrics
from service.http.protocol_errors import redact_refused_requests
from service.http.routing import serve_routes
from service.settings import Settings


async def _service(app: web.Application) -> AsyncIterator[None]:
    # Shutdown (SIGTERM, see `keyledger serve`): aiohttp first stops accepting
    # connections and lets in-flight requests finish (`shutdown_timeout`), then
    # leaves this context: the service stops in the order `service.bootstrap` documents.
    async with running(app[SETTINGS]) as service:
        app[KEYLEDGER] = service
        yield


async def _end_streams(app: web.Application) -> None:
    # Before aiohttp waits for in-flight requests: an open event stream would otherwise
    # hold the shutdown for its whole timeout.
    service = app.get(KEYLEDGER)
    if service is not None:
        service.fanout.close_all()


def create_app(settings: Settings) -> web.Application:
    """The keyledger API, ready to be run by ``web.run_app`` or a test server."""
    settings.pepper_bytes  # noqa: B018 - fail at construction, not on the first request
    redact_refused_requests()
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_service)
    app.on_shutdown.append(_end_streams)
    observe = install_metrics(app)
    tables = (
        metrics.routes,
        health_routes.routes,
        openapi.routes,
        key_routes.routes,
        identity_routes.routes,
        verify_routes.routes,
        query_routes.routes,
        webhook_routes.routes,
        leak_routes.routes,
        usage_routes.routes,
        key_usage_routes.routes,
        event_stream_routes.routes,
        console_routes.routes,
    )
    serve_routes(app, tables, observe)
    return app
