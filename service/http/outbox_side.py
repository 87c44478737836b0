"""The outbox relay inside the app: started on startup, stopped on cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from service.http.context import SETTINGS
from service.outbox.relay import OutboxRelay

# readyz and metrics read the relay's lag and NATS state from here; absent without NATS.
RELAY = web.AppKey("outbox_relay", OutboxRelay)


async def run_outbox_relay(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: relay the log to JetStream when ``nats_url`` is set.

    Start never waits for NATS: the relay connects and provisions the stream
    in the background, so commands are served while NATS is unreachable.
    """
    settings = app[SETTINGS]
    if not settings.nats_url:
        yield
        return
    relay = OutboxRelay(settings)
    relay.start()
    app[RELAY] = relay
    yield
    await relay.stop()
