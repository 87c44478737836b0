"""``GET /openapi.json``: the API description, built from the models the handlers use.

Request bodies are the pydantic models the handlers validate with
(``service.http.schemas``, ``VerifyBody``); answers are the models of
``service.http.response_shapes``; query parameters are built from the same
constants ``service.http.query_params`` checks against. ``OPERATIONS``, gathered
from the areas of ``service.http.api_operations``, is the one table of route →
description; a test checks it names every route the app serves, and a
schemathesis run checks the server against it.
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.http import response_shapes as shapes
from service.http.api_operations import (
    Operation,
    console,
    integrations,
    keys,
    reads,
    verification,
)
from service.http.api_operations.headers import HEADERS, REQUEST_ID, header_ref
from service.http.schemas import EnableKeyBody

__all__ = ["OPERATIONS", "Operation", "build_openapi", "routes"]

routes = web.RouteTableDef()
_REF = "#/components/schemas/{model}"
# The order of the catalogue is the order of ``paths`` in the document.
OPERATIONS: tuple[Operation, ...] = (
    *console.SERVICE,
    *keys.COMMANDS,
    *integrations.IDENTITIES,
    *reads.KEY_READS,
    *console.CONSOLE,
    *reads.AUDIT,
    *verification.OPERATIONS,
    *integrations.WEBHOOKS,
    *integrations.USAGE_AND_LEAKS,
)
# authorize answers 401/403/429 with the verdict, or with an error about the proxy's own key.
_VERDICT_OR_ERROR = ("401", "403", "429")
# Headers of an error status, whichever operation answers it: 429 is only ever
# ``rate_limited`` (the caller's service key over its limit), whose details carry the
# ``retry_after`` that ``errors.json_error`` turns into Retry-After.
_ERROR_HEADERS: dict[str, dict[str, dict[str, str]]] = {
    "429": {"Retry-After": header_ref("RetryAfter")},
}


def _schema_ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(op: Operation) -> dict[str, Any]:
    error = _schema_ref(shapes.ErrorBody)
    out: dict[str, Any] = {}
    for status, model in op.answers.items():
        out[status] = _json(_schema_ref(model), "OK") if model else {"description": "Not modified"}
    if op.path == "/metrics":
        out["200"] = {
            "description": "Prometheus text exposition",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    elif op.media is not None:
        media_types, description = op.media
        out["200"] = {
            "description": description,
            "content": {media: {"schema": {"type": "string"}} for media in media_types},
        }
    elif op.path == "/openapi.json":
        out["200"] = _json({"type": "object"}, "This OpenAPI document")
    for status in op.errors:
        out[status] = _json(error, "Error")
    if op.path == "/v1/authorize":
        for status in _VERDICT_OR_ERROR:
            out[status] = _json(
                {"anyOf": [_schema_ref(shapes.VerifyResult), error]},
                "The verdict (customer key refused) or an error (proxy's service key refused)",
            )
    out["default"] = _json(error, "Any other error (same shape)")
    for status, response in out.items():
        # request_context.in_context gives every answer of every route its X-Request-Id.
        headers = {**REQUEST_ID, **op.answer_headers.get(status, {})}
        if status in op.errors:
            headers |= _ERROR_HEADERS.get(status, {})
        response["headers"] = headers
    return out


def _operation(op: Operation) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "summary": op.summary,
        "operationId": op.name
        or f"{op.method}_{op.path.strip('/').replace('/', '_').replace('.', '_')}",
        "tags": [op.tag],
        "parameters": list(op.parameters),
        "responses": _responses(op),
        "security": [{op.security: []}] if op.security else [],
    }
    if op.body is not None:
        spec["requestBody"] = {
            "required": op.body is not EnableKeyBody,
            "content": {"application/json": {"schema": _schema_ref(op.body)}},
        }
    return spec


@functools.cache
def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of this version of keyledger."""
    models = {op.body for op in OPERATIONS if op.body} | set(shapes.RESPONSE_MODELS)
    _, components = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)], ref_template=_REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "keyledger",
            "version": "0.1.0",
            "description": "Event-sourced API key lifecycle service.",
        },
        "paths": paths,
        "components": {
            "schemas": components.get("$defs", {}),
            "headers": HEADERS,
            "securitySchemes": {
                "ServiceKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A keyledger service key (org `_system`).",
                },
                "ProxyServiceKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Keyledger-Service-Key",
                    "description": "The proxy's own service key (scope keys:verify).",
                },
            },
        },
    }


@routes.get("/openapi.json")
async def openapi(_: web.Request) -> web.Response:
    """The OpenAPI document."""
    return web.json_response(build_openapi())
