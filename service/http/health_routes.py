"""``GET /healthz`` (the process is up) and ``GET /readyz`` (it can serve correctly), SPEC §8.

Both are unauthenticated: load balancers and orchestrators probe them. A
replica is ready when PostgreSQL answers, NATS is connected (when
configured), and its verification index, projections and the outbox relay
are within ``KEYLEDGER_READY_MAX_LAG`` events of the log head, and the log
holds every witness of its head (never ready while ``log_truncated``). Otherwise
``/readyz`` answers 503 ``{"status": "not_ready", "problems": [...]}``, one
human-readable line per thing that is not.
"""

from __future__ import annotations

from aiohttp import web

from service.http.context import SETTINGS
from service.http.vitals import Vitals, read_vitals

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(_: web.Request) -> web.Response:
    """The process is up (no dependency is checked)."""
    return web.json_response({"status": "ok"})


def readiness_problems(vitals: Vitals, max_lag: int) -> list[str]:
    """Why this replica should not get traffic; empty when it should."""
    problems: list[str] = []
    if not vitals.database_ok:
        problems.append("database: not answering")
    if vitals.log_truncated:
        # This replica would answer from a log missing events: never ready (SPEC §10).
        problems.append(vitals.log_truncated)
    if vitals.nats_configured and not vitals.nats_connected:
        problems.append("nats: not connected")
    if vitals.relay_problem:
        problems.append(f"outbox relay: {vitals.relay_problem}")
    if vitals.index_position is None:
        problems.append("verification index: not loaded")
    elif vitals.index_lag is not None and vitals.index_lag > max_lag:
        problems.append(f"verification index: {vitals.index_lag} events behind the log")
    for name, reason in vitals.projection_failures.items():
        problems.append(f"projection {name}: stopped ({reason})")
    if not vitals.projection_positions:
        problems.append("projections: not running")
    for name, lag in vitals.projection_lags().items():
        if lag > max_lag:
            problems.append(f"projection {name}: {lag} events behind the log")
    if vitals.outbox_lag is not None and vitals.outbox_lag > max_lag:
        problems.append(f"outbox relay: {vitals.outbox_lag} events not yet published to NATS")
    return problems


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """200 ``{"status": "ready"}``, or 503 naming every problem."""
    vitals = await read_vitals(request.app)
    problems = readiness_problems(vitals, request.app[SETTINGS].ready_max_lag)
    if problems:
        return web.json_response({"status": "not_ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})
