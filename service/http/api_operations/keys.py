"""The key commands: generate, update, rename, disable, enable, revoke, rotate, bulk revoke."""

from __future__ import annotations

from pydantic import BaseModel

from service.http import response_shapes as shapes
from service.http.api_operations import (
    COMMAND,
    COMMAND_HEADERS,
    IDEMPOTENCY_KEY,
    KEY,
    KEY_PATH,
    ON_BEHALF_OF,
    ORG_PATH,
    Operation,
)
from service.http.api_operations.headers import ETAG
from service.http.schemas import (
    DisableKeyBody,
    EnableKeyBody,
    GenerateKeyBody,
    RenameKeyBody,
    RevokeKeyBody,
    RevokeKeysBody,
    RotateKeyBody,
    UpdateKeyBody,
)


def _command(
    path: str, summary: str, body: type[BaseModel], status: str = "200", method: str = "post"
) -> Operation:
    """A command; its operationId is its name (``GenerateKey: …`` → ``generateKey``)."""
    command = summary.split(":", 1)[0]
    name = command[0].lower() + command[1:]
    params = [ORG_PATH] + ([KEY_PATH] if "{key_id}" in path else []) + COMMAND_HEADERS
    if "{key_id}" in path:
        # Nothing is decided on a state that cannot be read (docs/security.md §5).
        summary += " (409 `key_quarantined`, nothing written, when the key's events do not fold)"
    return Operation(
        method,
        path,
        summary,
        "commands",
        body=body,
        parameters=params,
        answers={status: shapes.CommandResult},
        answer_headers={status: ETAG},  # key_routes._response: the key's new version
        errors=COMMAND,
        name=name,
    )


COMMANDS: tuple[Operation, ...] = (
    _command("/v1/orgs/{org_id}/keys", "GenerateKey", GenerateKeyBody, "201"),
    _command(
        KEY,
        "UpdateKey: change aspects of a key, one event per aspect changed",
        UpdateKeyBody,
        method="patch",
    ),
    _command(f"{KEY}/rename", "RenameKey", RenameKeyBody),
    _command(f"{KEY}/disable", "DisableKey", DisableKeyBody),
    _command(f"{KEY}/enable", "EnableKey", EnableKeyBody),
    _command(f"{KEY}/revoke", "RevokeKey", RevokeKeyBody),
    _command(f"{KEY}/rotate", "RotateKey", RotateKeyBody),
    Operation(
        "post",
        "/v1/orgs/{org_id}/revocations",
        "Bulk revocation (scope keys:write): `reason` and exactly one of `key_ids` (1-1000),"
        " `created_by` (an actor id) or `all: true`, optionally within one `environment`; one"
        " transaction, one KeyRevoked per key still revocable. 404 `key_not_found` (nothing"
        " written) when a named id is not a key of the org; 409 `too_many_keys` past 10,000.",
        "commands",
        body=RevokeKeysBody,
        parameters=[ORG_PATH, IDEMPOTENCY_KEY, ON_BEHALF_OF],
        answers={"200": shapes.RevocationResult},
        errors=COMMAND,
        name="revokeKeys",
    ),
)
