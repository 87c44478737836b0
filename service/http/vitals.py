"""The app's vitals (``service.vitals_reading``), read for ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from aiohttp import web

from service.http.context import KEYLEDGER, SETTINGS
from service.vitals_reading import Vitals

__all__ = ["Vitals", "read_vitals"]


async def read_vitals(app: web.Application) -> Vitals:
    """The running service's vitals; all unknown while it has not started."""
    service = app.get(KEYLEDGER)
    if service is None:
        return Vitals.not_running(nats_configured=bool(app[SETTINGS].nats_url))
    return await service.vitals.read()
