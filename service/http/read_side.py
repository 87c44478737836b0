"""The projection runner inside the app: started on startup, stopped on cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from projections.catalog import all_projections
from projections.runner import ProjectionRunner
from service.http.context import POOL, SETTINGS

# Other parts (queries, readyz, metrics) read projection positions and lag from here.
PROJECTIONS = web.AppKey("projections", ProjectionRunner)


async def run_projections(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: follow the log for every projection while the app runs."""
    settings = app[SETTINGS]
    assert settings.database_url is not None  # _database refuses to start without it
    runner = ProjectionRunner(
        app[POOL],
        settings.database_url,
        all_projections(),
        batch_size=settings.projection_batch_size,
        fallback_poll_seconds=settings.projection_fallback_poll_seconds,
    )
    await runner.start()
    app[PROJECTIONS] = runner
    yield
    await runner.stop()
