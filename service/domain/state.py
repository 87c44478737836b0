"""The state of one key as the decider sees it: a fold of its events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from events.models import RateLimit

Status = Literal["active", "disabled", "revoked", "expired"]
TERMINAL: frozenset[str] = frozenset({"revoked", "expired"})


@dataclass(frozen=True, slots=True)
class KeyState:
    """Everything known about a key after its last event. Immutable."""

    key_id: str
    org_id: str
    name: str
    type: str
    environment: str
    status: Status
    scopes: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    resource: str | None
    algorithm: str | None
    public_key: str | None
    secret_hash: str | None
    hint: str | None
    metadata: dict[str, Any]
    rate_limit: RateLimit | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    version: int
    disabled_at: datetime | None = None
    revoked_at: datetime | None = None
    previous_secret_hash: str | None = None
    previous_public_key: str | None = None
    previous_valid_until: datetime | None = None
    # Global position of the key's last event; filled in by the event store's fold.
    position: int = 0

    def status_at(self, now: datetime) -> Status:
        """The status a caller sees at ``now``: past ``expires_at`` is expired,
        whether or not ``KeyExpired`` has been written yet."""
        if self.status in TERMINAL:
            return self.status
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return self.status

    def counts_as_active(self, now: datetime) -> bool:
        """Whether the key uses one of its org's active-key slots."""
        return self.status_at(now) == "active"
