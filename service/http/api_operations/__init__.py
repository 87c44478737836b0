"""The catalogue ``/openapi.json`` is rendered from: one ``Operation`` per route.

This package holds the ``Operation`` record and the parameters and error sets
the areas share; each module beside it describes one area of the API
(``keys``, ``reads``, ``verification``, ``integrations``, ``console``).
``service.http.openapi`` gathers them into ``OPERATIONS`` and renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from service.domain.orgs import SYSTEM_ORG
from service.domain.vocabulary import ACTOR_ID, HEADER_TEXT, KEY_ID, ORG_ID

ORG = {"type": "string", "pattern": f"^(?:{SYSTEM_ORG}|{ORG_ID.body})$"}
KEY_ID_SCHEMA = {"type": "string", "pattern": KEY_ID.json_pattern}
HEADER_TEXT_SCHEMA = {"type": "string", "pattern": HEADER_TEXT.json_pattern}
ACTOR = {"type": "string", "pattern": ACTOR_ID.json_pattern}
POSITION = {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}


def param(
    where: str, name: str, schema: dict[str, Any], doc: str, required: bool = False
) -> dict[str, Any]:
    """One OpenAPI parameter: ``where`` is ``path``, ``query`` or ``header``."""
    return {"in": where, "name": name, "required": required, "schema": schema, "description": doc}


MIN_POSITION = param(
    "query", "min_position", POSITION, "Answer only from state at or past this log position."
)
ORG_PATH = param("path", "org_id", ORG, "The tenant (or `_system` for service keys).", True)
KEY_PATH = param("path", "key_id", KEY_ID_SCHEMA, "`key_` + a 26-character ULID.", True)
IDENTITY_PATH = param(
    "path",
    "identity_id",
    {"type": "string", "minLength": 1, "maxLength": 128},
    "The identity's id in your own system (no control characters).",
    True,
)
IDEMPOTENCY_KEY = param(
    "header",
    "Idempotency-Key",
    HEADER_TEXT_SCHEMA,
    "Printable ASCII, at most 255 characters. A retry with the same key, method, path and"
    " body within KEYLEDGER_IDEMPOTENCY_TTL_HOURS (24 h) returns the first result"
    " (`replayed: true`, no secret); another request with it is 422 `idempotency_key_reused`.",
)
ON_BEHALF_OF = param(
    "header",
    "X-On-Behalf-Of",
    HEADER_TEXT_SCHEMA,
    "Printable ASCII, at most 255 characters; recorded in the event's actor (e.g. `user:42`).",
)
COMMAND_HEADERS = [
    IDEMPOTENCY_KEY,
    param("header", "If-Match", {"type": "string"}, 'Conditional command: `"<version>"`.'),
    ON_BEHALF_OF,
]


@dataclass(frozen=True)
class Operation:
    """One route as ``/openapi.json`` describes it."""

    method: str
    path: str
    summary: str
    tag: str
    security: str | None = "ServiceKey"
    body: type[BaseModel] | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    # status → response model (None: no body); error statuses use the error shape.
    answers: dict[str, type[BaseModel] | None] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    # The operationId: what the operation does (``generateKey``), so generated clients read
    # well; without one it is derived from the method and path.
    name: str | None = None
    # A 200 that is not JSON: its media types (an asset may be any of several) and description.
    media: tuple[tuple[str, ...], str] | None = None
    # Headers worth declaring, by status then name: OpenAPI header objects or references
    # (``api_operations.headers``). Every answer's ``X-Request-Id`` is added by the renderer.
    answer_headers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


AUTHENTICATED = ("400", "401", "403", "422", "429")
WITH_BODY = ("400", "413", "415", "422")
COMMAND = (*AUTHENTICATED, *WITH_BODY, "404", "409", "412", "503")
READ = (*AUTHENTICATED, "404", "503")

KEY = "/v1/orgs/{org_id}/keys/{key_id}"
IDENTITY = "/v1/orgs/{org_id}/identities/{identity_id}"
