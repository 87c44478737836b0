"""The public JSON shape of a key (docs/api.md#keys): no secret, no hash."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from events.codec import format_timestamp
from service.domain.state import KeyState


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


def render_key(
    state: KeyState, now: datetime, last_used_at: datetime | None = None
) -> dict[str, Any]:
    """The key as callers see it at ``now``."""
    created_at = _ts(state.created_at)
    return {
        "id": state.key_id,
        "org_id": state.org_id,
        "name": state.name,
        "type": state.type,
        "environment": state.environment,
        "status": state.status_at(now),
        "scopes": list(state.scopes),
        "allowed_origins": list(state.allowed_origins) if state.type == "embed" else None,
        "resource": state.resource,
        "algorithm": state.algorithm,
        "public_key": state.public_key,
        "hint": state.hint,
        "metadata": state.metadata,
        "rate_limit": state.rate_limit.model_dump() if state.rate_limit else None,
        "rate_limits": [limit.model_dump() for limit in state.rate_limits],
        "credits": state.credits.model_dump() if state.credits else None,
        "allowed_cidrs": list(state.allowed_cidrs),
        "identity_id": state.identity_id,
        "created_at": created_at,
        # A key not changed since it was made (every new one) has one instant for both.
        "updated_at": created_at if state.updated_at == state.created_at else _ts(state.updated_at),
        "last_used_at": _ts(last_used_at),
        "expires_at": _ts(state.expires_at),
        "disabled_at": _ts(state.disabled_at),
        "revoked_at": _ts(state.revoked_at),
        "previous_valid_until": _ts(state.previous_valid_until),
        "version": state.version,
    }
