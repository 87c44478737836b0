"""Commands: what a caller asks of a key, as immutable values.

Anything that needs I/O or randomness (new ids, key material, the clock, the
number of active keys in the org) is resolved by the shell and carried in the
command, so that ``decide`` stays a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from enum import Enum
from operator import attrgetter
from typing import Any, Final

from events.models import Credits, NamedRateLimit, RateLimit
from events.vocabulary import Algorithm, Environment, KeyType, RevokeReason


@dataclass(frozen=True, slots=True)
class ActiveKeyQuota:
    """How many keys are active in the org and environment, and the ceiling.

    ``limit`` is None where no limit applies (the ``_system`` org)."""

    active: int
    limit: int | None

    @property
    def exhausted(self) -> bool:
        """Whether one more active key would go over the limit."""
        return self.limit is not None and self.active >= self.limit


UNLIMITED = ActiveKeyQuota(active=0, limit=None)


@dataclass(frozen=True, slots=True)
class GenerateKey:
    key_id: str
    org_id: str
    name: str
    type: KeyType
    environment: Environment
    issued_at: datetime
    scopes: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    resource: str | None = None
    algorithm: Algorithm | None = None
    public_key: str | None = None
    secret_hash: str | None = None
    hint: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    rate_limit: RateLimit | None = None
    expires_at: datetime | None = None
    quota: ActiveKeyQuota = UNLIMITED
    rate_limits: tuple[NamedRateLimit, ...] = ()
    credits: Credits | None = None
    allowed_cidrs: tuple[str, ...] = ()
    identity_id: str | None = None


@dataclass(frozen=True, slots=True)
class RenameKey:
    key_id: str
    name: str
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class DisableKey:
    key_id: str
    issued_at: datetime
    reason: str | None = None
    # Set when a leak report disables the key: where the secret was found.
    leak_url: str | None = None


@dataclass(frozen=True, slots=True)
class EnableKey:
    key_id: str
    issued_at: datetime
    quota: ActiveKeyQuota = UNLIMITED


@dataclass(frozen=True, slots=True)
class RevokeKey:
    key_id: str
    reason: RevokeReason
    issued_at: datetime
    # Set when a leak report revokes the key: where the secret was found.
    leak_url: str | None = None


@dataclass(frozen=True, slots=True)
class RotateKey:
    key_id: str
    issued_at: datetime
    grace_period: timedelta
    secret_hash: str | None = None
    hint: str | None = None
    public_key: str | None = None


@dataclass(frozen=True, slots=True)
class ExpireKey:
    key_id: str
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class RefillCredits:
    """Top a key's credits up for the refill period ``issued_at`` falls in (the sweeper)."""

    key_id: str
    issued_at: datetime


class Keep(Enum):
    """An aspect an ``UpdateKey`` leaves as it is (None would mean "clear it")."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


@dataclass(frozen=True, slots=True)
class UpdateKey:
    """Change aspects of a key after issue; each aspect given replaces the current value."""

    key_id: str
    issued_at: datetime
    name: str | Keep = KEEP
    scopes: tuple[str, ...] | Keep = KEEP
    metadata: dict[str, Any] | Keep = KEEP
    rate_limits: tuple[NamedRateLimit, ...] | Keep = KEEP
    credits: Credits | Keep | None = KEEP
    allowed_origins: tuple[str, ...] | Keep = KEEP
    allowed_cidrs: tuple[str, ...] | Keep = KEEP
    expires_at: datetime | Keep | None = KEEP
    identity_id: str | Keep | None = KEEP


@dataclass(frozen=True, slots=True)
class WarnExpiry:
    """Warn that the key expires within ``lead_time`` (``lead`` is its configured text)."""

    key_id: str
    lead: str
    lead_time: timedelta
    issued_at: datetime


Command = (
    GenerateKey
    | RenameKey
    | DisableKey
    | EnableKey
    | RevokeKey
    | RotateKey
    | ExpireKey
    | UpdateKey
    | RefillCredits
    | WarnExpiry
)


_FIELDS = {cls: tuple(f.name for f in fields(cls)) for cls in (GenerateKey, EnableKey)}
_VALUES = {cls: attrgetter(*names) for cls, names in _FIELDS.items()}
_QUOTA_AT = {cls: names.index("quota") for cls, names in _FIELDS.items()}


def with_quota(command: GenerateKey | EnableKey, quota: ActiveKeyQuota) -> GenerateKey | EnableKey:
    """``dataclasses.replace(command, quota=quota)``, the values passed positionally:
    ``replace`` inspects every field's metadata on each call, and this runs on every
    GenerateKey (half the cost of the copy)."""
    cls = type(command)
    values = list(_VALUES[cls](command))
    values[_QUOTA_AT[cls]] = quota
    return cls(*values)
