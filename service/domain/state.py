"""The state of one key as the decider sees it: a fold of its events."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, TypedDict, Unpack

from events.models import Credits, NamedRateLimit, RateLimit
from events.vocabulary import TERMINAL_STATUSES, Algorithm, Environment, KeyType, Status


class KeyStateChanges(TypedDict, total=False):
    """What an event (or the event store, ``position``) may change in a key's state."""

    name: str
    status: Status
    scopes: tuple[str, ...]
    metadata: dict[str, Any]
    rate_limit: RateLimit | None
    rate_limits: tuple[NamedRateLimit, ...]
    credits: Credits | None
    allowed_origins: tuple[str, ...]
    allowed_cidrs: tuple[str, ...]
    expires_at: datetime | None
    identity_id: str | None
    credits_version: int
    credits_period: str | None
    disabled_at: datetime | None
    revoked_at: datetime | None
    secret_hash: str | None
    hint: str | None
    public_key: str | None
    previous_secret_hash: str | None
    previous_public_key: str | None
    previous_valid_until: datetime | None
    updated_at: datetime
    version: int
    position: int
    expiry_warnings: frozenset[tuple[str, datetime]]


@dataclass(frozen=True, slots=True)
class KeyState:
    """Everything known about a key after its last event. Immutable."""

    key_id: str
    org_id: str
    name: str
    type: KeyType
    environment: Environment
    status: Status
    scopes: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    resource: str | None
    algorithm: Algorithm | None
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
    # Usage limits and grouping (changes after issue). ``rate_limit`` above is always
    # the limit of ``rate_limits`` named ``default``: the one-limit form keys began with.
    rate_limits: tuple[NamedRateLimit, ...] = ()
    credits: Credits | None = None
    allowed_cidrs: tuple[str, ...] = ()
    identity_id: str | None = None
    # The version of the event that last set (or cleared) ``credits``, 0 if none did: what
    # replicas spend from is tagged with it. And the refill period the balance belongs to.
    credits_version: int = 0
    credits_period: str | None = None
    # (lead, expires_at) of every KeyExpiringSoon written: each is written once.
    expiry_warnings: frozenset[tuple[str, datetime]] = frozenset()

    def status_at(self, now: datetime) -> Status:
        """The status a caller sees at ``now``: past ``expires_at`` is expired,
        whether or not ``KeyExpired`` has been written yet."""
        if self.status in TERMINAL_STATUSES:
            return self.status
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return self.status

    def with_changes(self, **changes: Unpack[KeyStateChanges]) -> KeyState:
        """A new state with ``changes`` applied; this one is left as it is.

        ``dataclasses.replace`` inspects every field's metadata and goes
        through ``__init__`` with keywords on each call, which made it the
        largest single cost of folding a log. This copies the values
        positionally and fills the new instance's slots directly (what the
        frozen ``__init__`` does too, field by field; there is no
        ``__post_init__`` to skip).
        """
        values = list(_field_values(self))
        try:
            for name, value in changes.items():
                values[_FIELD_INDEX[name]] = value
        except KeyError as exc:
            raise TypeError(f"KeyState has no field {exc.args[0]!r}") from None
        new = object.__new__(KeyState)
        for set_slot, value in zip(_SLOT_SETTERS, values):  # noqa: B905 (same length; strict costs)
            set_slot(new, value)
        return new


_FIELD_NAMES = tuple(f.name for f in fields(KeyState))
_FIELD_INDEX = {name: index for index, name in enumerate(_FIELD_NAMES)}
_field_values = attrgetter(*_FIELD_NAMES)
# The slot descriptors' setters, which a frozen dataclass's own __setattr__ refuses.
_SLOT_SETTERS = tuple(getattr(KeyState, name).__set__ for name in _FIELD_NAMES)


# The name the single ``rate_limit`` of a key takes among its named limits.
DEFAULT_LIMIT_NAME = "default"


def named_limits(rate_limit: RateLimit | None) -> tuple[NamedRateLimit, ...]:
    """The single ``rate_limit`` form as named limits (the one named ``default``)."""
    if rate_limit is None:
        return ()
    return (
        NamedRateLimit(name=DEFAULT_LIMIT_NAME, limit=rate_limit.limit, window=rate_limit.window),
    )


def default_limit(rate_limits: tuple[NamedRateLimit, ...]) -> RateLimit | None:
    """The limit named ``default`` in the single ``rate_limit`` form, if there is one."""
    for named in rate_limits:
        if named.name == DEFAULT_LIMIT_NAME:
            return RateLimit(limit=named.limit, window=named.window)
    return None
