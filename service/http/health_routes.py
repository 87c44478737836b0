"""``GET /healthz`` (the process is up) and ``GET /readyz`` (it can serve correctly).

Both are unauthenticated: load balancers and orchestrators probe them.

``/readyz`` answers 503 only for what makes *this* replica answer wrongly or
not at all: PostgreSQL not answering, its own verification index not loaded
or more than ``KEYLEDGER_READY_MAX_LAG`` events behind, or the log's
integrity broken (a truncated head, or a gap a projection found). Whatever every replica
shares (NATS unreachable, the outbox relay behind, a projection lagging, keys
in quarantine) answers 200 with ``"status": "degraded"``: draining this
replica would not help, and a load balancer would drain the whole fleet over
one shared outage (docs/security.md §8).

Bodies: ``{"status": "ready"}``; ``{"status": "degraded", "degraded": [...]}``;
``{"status": "not_ready", "problems": [...], "degraded"?: [...]}``; one
human-readable line each, plus ``quarantined`` naming the keys set aside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from service.http.context import SETTINGS
from service.http.vitals import Vitals, read_vitals

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(_: web.Request) -> web.Response:
    """The process is up (no dependency is checked)."""
    return web.json_response({"status": "ok"})


@dataclass(frozen=True, slots=True)
class Readiness:
    """What /readyz says: ``problems`` make it 503, ``degraded`` is reported with 200."""

    problems: list[str]
    degraded: list[str]

    @property
    def status(self) -> str:
        if self.problems:
            return "not_ready"
        return "degraded" if self.degraded else "ready"


def _this_replica(vitals: Vitals, max_lag: int) -> list[str]:
    """Why this replica itself would answer wrongly or not at all (503)."""
    problems: list[str] = []
    if not vitals.database_ok:
        problems.append("database: not answering")
    if vitals.log_truncated:
        # This replica would answer from a log missing events: never ready (docs/security.md §6).
        problems.append(vitals.log_truncated)
    if vitals.index_position is None:
        problems.append("verification index: not loaded")
    elif vitals.index_lag is not None and vitals.index_lag > max_lag:
        problems.append(f"verification index: {vitals.index_lag} events behind the log")
    # Integrity: a damaged log (a gap a projection found, a truncated head, …).
    problems.extend(f"log integrity: {problem}" for problem in vitals.integrity_problems)
    for name, reason in vitals.projection_failures.items():
        problems.append(f"log integrity: projection {name} stopped ({reason})")
    return problems


def _shared(vitals: Vitals, max_lag: int) -> list[str]:
    """What every replica shares: reported, but never a reason to drain this one (200)."""
    degraded: list[str] = []
    if vitals.nats_configured and not vitals.nats_connected:
        degraded.append("nats: not connected")
    if vitals.relay_problem:
        degraded.append(f"outbox relay: {vitals.relay_problem}")
    if vitals.outbox_lag is not None and vitals.outbox_lag > max_lag:
        degraded.append(f"outbox relay: {vitals.outbox_lag} events not yet published to NATS")
    if not vitals.projection_positions:
        degraded.append("projections: not running on this replica")
    for name, lag in vitals.projection_lags().items():
        if lag > max_lag:
            degraded.append(f"projection {name}: {lag} events behind the log")
    for consumer, count in sorted(vitals.quarantine_counts.items()):
        degraded.append(f"quarantine: {consumer} has set aside {count} key(s)")
    return degraded


def assess_readiness(vitals: Vitals, max_lag: int) -> Readiness:
    """Sort what is wrong into this replica's problems (503) and shared degradations (200)."""
    return Readiness(_this_replica(vitals, max_lag), _shared(vitals, max_lag))


def readiness_body(readiness: Readiness, vitals: Vitals) -> dict[str, Any]:
    """The JSON of /readyz. Quarantines name consumer, key id and position, never the reason."""
    body: dict[str, Any] = {"status": readiness.status}
    if readiness.problems:
        body["problems"] = readiness.problems
    if readiness.degraded:
        body["degraded"] = readiness.degraded
    if vitals.quarantined:
        body["quarantined"] = [
            {
                "consumer": entry.consumer,
                "key_id": entry.key_id,
                "position": entry.position,
                "event_type": entry.event_type,
            }
            for entry in vitals.quarantined
        ]
    return body


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """200 ``ready`` or ``degraded``, or 503 ``not_ready``; every problem named."""
    vitals = await read_vitals(request.app)
    readiness = assess_readiness(vitals, request.app[SETTINGS].ready_max_lag)
    status = 503 if readiness.problems else 200
    return web.json_response(readiness_body(readiness, vitals), status=status)
