"""The truncation guard inside the app: checked at start, kept in memory while running."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from service.http.context import COMMANDS, POOL, SETTINGS, TRUNCATION_GUARD
from service.http.verify_routes import VERIFICATION_INDEX
from service.store.log_witnesses import Witness
from service.truncation_guard import TruncationGuard


async def guard_the_log(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: compare the log head with its witnesses, at start and periodically.

    A truncated log does not stop the start: the replica comes up not ready
    (``/readyz`` 503), refuses verification and commands, and says why in the
    log, so that an operator can look and repair.
    """
    settings = app[SETTINGS]
    index = app[VERIFICATION_INDEX]

    def applied_by_the_index() -> list[Witness]:
        # The index applies only committed events (from PostgreSQL or JetStream).
        return [Witness("verification_index", index.position)] if index.position else []

    guard = TruncationGuard(
        app[POOL],
        nats_url=settings.nats_url,
        nats_stream=settings.nats_stream,
        interval_seconds=settings.witness_check_interval_seconds,
        in_memory=applied_by_the_index,
    )
    await guard.start()
    app[TRUNCATION_GUARD] = guard
    app[COMMANDS].write_guard = guard.require_intact
    app[COMMANDS].head_guard = guard.require_head_reaches
    yield
    app[COMMANDS].write_guard = None
    app[COMMANDS].head_guard = None
    await guard.stop()
