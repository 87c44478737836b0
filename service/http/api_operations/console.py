"""The operations endpoints (health, readiness, metrics, this document) and the web console."""

from __future__ import annotations

from service.http import response_shapes as shapes
from service.http.api_operations import KEY_PATH, ORG_PATH, Operation, param
from service.http.console_routes import ASSET_TYPES

SERVICE: tuple[Operation, ...] = (
    Operation(
        "get",
        "/healthz",
        "The process is up",
        "operations",
        None,
        answers={"200": shapes.Health},
        name="health",
    ),
    Operation(
        "get",
        "/readyz",
        "200 ready or degraded (shared problems: NATS, relay, projections, quarantines);"
        " 503 only when this replica would answer wrongly",
        "operations",
        None,
        answers={"200": shapes.Readiness, "503": shapes.Readiness},
        name="readiness",
    ),
    Operation("get", "/metrics", "Prometheus metrics (text)", "operations", None, name="metrics"),
    Operation("get", "/openapi.json", "This document", "operations", None, name="openapi"),
)

_PAGE = ("text/html",)
CONSOLE: tuple[Operation, ...] = tuple(
    Operation(
        "get",
        path,
        summary,
        "console",
        security=None,
        parameters=params,
        errors=("404",),
        media=(media, "The console's page or asset"),
        name=name,
    )
    for path, summary, params, media, name in (
        ("/console", "The web console (sign in)", [], _PAGE, "consoleSignIn"),
        ("/console/orgs/{org_id}", "The console: an org's keys", [ORG_PATH], _PAGE, "consoleKeys"),
        (
            "/console/orgs/{org_id}/keys/{key_id}",
            "The console: one key and its timeline",
            [ORG_PATH, KEY_PATH],
            _PAGE,
            "consoleKey",
        ),
        (
            "/console/assets/{name}",
            "The console's script, style sheet and icon",
            [
                param(
                    "path",
                    "name",
                    # A fixed list (404 for any other name).
                    {"type": "string", "enum": sorted(ASSET_TYPES)},
                    "An asset's file name.",
                    True,
                )
            ],
            # What the assets are served as (a generated client reads each as text).
            tuple(sorted({served.split(";")[0] for served in ASSET_TYPES.values()})),
            "consoleAsset",
        ),
    )
)
