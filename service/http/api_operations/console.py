"""The operations endpoints (health, readiness, metrics, this document) and the web console."""

from __future__ import annotations

from service.http import response_shapes as shapes
from service.http.api_operations import KEY_PATH, ORG_PATH, Operation, param

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
        ("/console", "The web console (sign in)", [], "text/html", "consoleSignIn"),
        (
            "/console/orgs/{org_id}",
            "The console: an org's keys",
            [ORG_PATH],
            "text/html",
            "consoleKeys",
        ),
        (
            "/console/orgs/{org_id}/keys/{key_id}",
            "The console: one key and its timeline",
            [ORG_PATH, KEY_PATH],
            "text/html",
            "consoleKey",
        ),
        (
            "/console/assets/{name}",
            "The console's script, style sheet and icon",
            [param("path", "name", {"type": "string"}, "An asset's file name.", True)],
            "*/*",
            "consoleAsset",
        ),
    )
)
