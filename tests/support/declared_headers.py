"""The response headers ``/openapi.json`` declares for an answer, its ``$ref``s resolved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def declared_headers(
    document: Mapping[str, Any], path: str, method: str, status: int
) -> dict[str, dict[str, Any]]:
    """Header name → header object of the answer ``status`` of ``method path``
    (the ``default`` answer's when the status is not listed)."""
    responses = document["paths"][path][method]["responses"]
    answer = responses.get(str(status), responses["default"])
    components = document["components"]["headers"]
    resolved: dict[str, dict[str, Any]] = {}
    for name, header in answer.get("headers", {}).items():
        if "$ref" in header:
            header = components[header["$ref"].removeprefix("#/components/headers/")]
        resolved[name] = header
    return resolved


def missing_headers(
    document: Mapping[str, Any],
    path: str,
    method: str,
    status: int,
    sent: Mapping[str, str],
    *,
    optional_too: bool = False,
) -> set[str]:
    """The headers declared required (every declared one with ``optional_too``) for this
    answer that ``sent`` (a case-insensitive header map) lacks."""
    declared = declared_headers(document, path, method, status)
    return {
        name
        for name, header in declared.items()
        if (optional_too or header.get("required")) and name not in sent
    }
