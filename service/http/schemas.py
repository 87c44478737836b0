"""Request bodies, validated strictly: unknown fields are refused.

Every identifier and text field is a type of the input vocabulary
(``service.domain.vocabulary``), so what a body may carry into an event is
decided in one place (docs/security.md §1).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from events.models import (
    CreditRefill,
    Credits,
    NamedRateLimit,
    RateLimit,
)
from events.vocabulary import (
    Algorithm,
    Environment,
    ExpiresIn,
    KeyType,
    RateWindow,
    RefillInterval,
    RevokeReason,
)
from service.domain.bulk_revocation import MAX_NAMED_KEYS
from service.domain.durations import parse_grace_period
from service.domain.state import named_limits
from service.domain.vocabulary import (
    ACTOR_ID,
    KEY_ID,
    Cidr,
    GrantedScope,
    IdentityId,
    Instant,
    LimitName,
    Metadata,
    Name,
    Origin,
    Reason,
    Resource,
)


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitBody(StrictBody):
    # Strict: a JSON integer, not true, 5.0 or "5" (what the event records is what was sent).
    limit: Annotated[StrictInt, Field(ge=1, le=1_000_000_000)]
    window: RateWindow


MAX_RATE_LIMITS = 5
MAX_CIDRS = 100
MAX_CREDITS = 10**15


class NamedRateLimitBody(StrictBody):
    name: LimitName
    limit: Annotated[StrictInt, Field(ge=1, le=1_000_000_000)]
    window: RateWindow


class CreditRefillBody(StrictBody):
    amount: Annotated[StrictInt, Field(ge=1, le=MAX_CREDITS)]
    interval: RefillInterval
    day: Annotated[StrictInt, Field(ge=1, le=28)] | None = None

    @model_validator(mode="after")
    def _day_is_monthly(self) -> CreditRefillBody:
        if self.day is not None and self.interval != "monthly":
            raise ValueError("day is for a monthly refill only")
        return self


class CreditsBody(StrictBody):
    remaining: Annotated[StrictInt, Field(ge=0, le=MAX_CREDITS)]
    refill: CreditRefillBody | None = None

    def credits(self) -> Credits:
        refill = self.refill
        return Credits(
            remaining=self.remaining,
            refill=CreditRefill(**refill.model_dump()) if refill is not None else None,
        )


RateLimitsField = Annotated[list[NamedRateLimitBody], Field(max_length=MAX_RATE_LIMITS)]
CidrsField = Annotated[list[Cidr], Field(max_length=MAX_CIDRS)]


def _distinct_names(limits: list[NamedRateLimitBody] | None) -> None:
    if limits is not None and len({limit.name for limit in limits}) != len(limits):
        raise ValueError("rate limit names must be distinct")


def rate_limits_of(
    rate_limits: list[NamedRateLimitBody] | None, rate_limit: RateLimitBody | None
) -> tuple[NamedRateLimit, ...]:
    """The named limits a body asks for (its single ``rate_limit`` is the one named default)."""
    if rate_limits is not None:
        return tuple(NamedRateLimit(**limit.model_dump()) for limit in rate_limits)
    return named_limits(RateLimit(**rate_limit.model_dump()) if rate_limit else None)


class GenerateKeyBody(StrictBody):
    name: Name
    type: KeyType
    environment: Environment = "live"
    expires_in: ExpiresIn | None = None
    expires_at: Instant | None = None
    scopes: Annotated[list[GrantedScope], Field(max_length=100)] = Field(default_factory=list)
    allowed_origins: Annotated[list[Origin], Field(min_length=1, max_length=50)] | None = None
    resource: Resource | None = None
    algorithm: Algorithm | None = None
    metadata: Metadata = Field(default_factory=dict)
    rate_limit: RateLimitBody | None = None
    rate_limits: RateLimitsField | None = None
    credits: CreditsBody | None = None
    allowed_cidrs: CidrsField = Field(default_factory=list)
    identity_id: IdentityId | None = None

    @model_validator(mode="after")
    def _fits_its_type(self) -> GenerateKeyBody:
        if self.expires_in is not None and self.expires_at is not None:
            raise ValueError("give either expires_in or expires_at, not both")
        if self.rate_limit is not None and self.rate_limits is not None:
            raise ValueError("give either rate_limit or rate_limits, not both")
        _distinct_names(self.rate_limits)
        is_embed = self.type == "embed"
        if is_embed and (self.allowed_origins is None or self.resource is None):
            raise ValueError("embed keys need allowed_origins and resource")
        if not is_embed and (self.allowed_origins is not None or self.resource is not None):
            raise ValueError("allowed_origins and resource are for embed keys only")
        if self.type != "signing" and self.algorithm is not None:
            raise ValueError("algorithm is for signing keys only")
        return self


# Aspects PATCH may set to null (clear); the others take a value (an empty list clears them).
_NULLABLE = frozenset({"credits", "expires_at", "identity_id", "rate_limit"})


# What a null would mean for an aspect that cannot be null, said in the refusal.
_HOW_TO_CLEAR = {
    "scopes": "an empty list grants none",
    "metadata": "{} clears it",
    "rate_limits": "an empty list removes them",
    "allowed_cidrs": "an empty list allows any address",
}


class UpdateKeyBody(StrictBody):
    """``PATCH /v1/orgs/{org}/keys/{id}``: the aspects to change; absent ones stay."""

    name: Name | None = None
    scopes: Annotated[list[GrantedScope], Field(max_length=100)] | None = None
    metadata: Metadata | None = None
    rate_limit: RateLimitBody | None = None
    rate_limits: RateLimitsField | None = None
    credits: CreditsBody | None = None
    allowed_origins: Annotated[list[Origin], Field(min_length=1, max_length=50)] | None = None
    allowed_cidrs: CidrsField | None = None
    expires_at: Instant | None = None
    identity_id: IdentityId | None = None

    @model_validator(mode="after")
    def _nulls_and_pairs(self) -> UpdateKeyBody:
        for name in sorted(self.model_fields_set - _NULLABLE):
            if getattr(self, name) is None:
                clears = _HOW_TO_CLEAR.get(name, "leave it out to keep it")
                raise PydanticCustomError(
                    "not_null", "{name} cannot be null ({clears})", {"name": name, "clears": clears}
                )
        if {"rate_limit", "rate_limits"} <= self.model_fields_set:
            raise ValueError("give either rate_limit or rate_limits, not both")
        _distinct_names(self.rate_limits)
        return self

    def given(self, name: str) -> bool:
        """Whether the body names the aspect ``name`` (null included)."""
        return name in self.model_fields_set


class RenameKeyBody(StrictBody):
    name: Name


class DisableKeyBody(StrictBody):
    reason: Reason | None = None


class EnableKeyBody(StrictBody):
    pass


class RevokeKeyBody(StrictBody):
    reason: RevokeReason


class RotateKeyBody(StrictBody):
    grace_period: Annotated[
        str, Field(json_schema_extra={"pattern": "^[0-9]{1,7}[smhd]$"}, description="0s-7d")
    ] = "24h"

    # A field's validator, so a refusal's ``loc`` names ``grace_period`` (a model's is ``[]``).
    @field_validator("grace_period")
    @classmethod
    def _grace(cls, value: str) -> str:
        parse_grace_period(value)
        return value


def _key_id(value: str) -> str:
    if not KEY_ID.matches(value):
        raise PydanticCustomError("key_id", "a key id is key_ followed by a 26-character ULID")
    return value


def _actor_id(value: str) -> str:
    if not ACTOR_ID.matches(value):
        raise PydanticCustomError("actor_id", "an actor id is 1-255 printable ASCII characters")
    return value


def _true(value: bool) -> bool:
    if value is not True:
        raise PydanticCustomError("all_true", "all is true when given")
    return value


KeyIdText = Annotated[
    str, AfterValidator(_key_id), Field(json_schema_extra={"pattern": KEY_ID.json_pattern})
]
ActorIdText = Annotated[
    str, AfterValidator(_actor_id), Field(json_schema_extra={"pattern": ACTOR_ID.json_pattern})
]


class RevokeKeysBody(StrictBody):
    """A bulk revocation: ``reason`` and exactly one of ``key_ids``, ``created_by``, ``all``."""

    reason: RevokeReason
    key_ids: Annotated[list[KeyIdText], Field(min_length=1, max_length=MAX_NAMED_KEYS)] | None = (
        None
    )
    created_by: ActorIdText | None = None
    all: Annotated[StrictBool, AfterValidator(_true), Field(json_schema_extra={"const": True})] | (
        None
    ) = None
    environment: Environment | None = None

    @model_validator(mode="after")
    def _one_selection(self) -> RevokeKeysBody:
        given = [self.key_ids is not None, self.created_by is not None, self.all is not None]
        if given.count(True) != 1:
            raise PydanticCustomError(
                "one_selection", "give exactly one of key_ids, created_by or all"
            )
        return self


class RegisterWebhookBody(StrictBody):
    url: Annotated[StrictStr, Field(min_length=1, max_length=2048)]
    # Empty or absent: every event type. Which types: ``subscribed_event_types`` (its own code).
    event_types: Annotated[list[StrictStr], Field(max_length=32)] = Field(default_factory=list)


class ConfigureIdentityBody(StrictBody):
    """``PUT /v1/orgs/{org}/identities/{id}``: the whole identity (absent metadata is empty)."""

    rate_limits: RateLimitsField
    metadata: Metadata = Field(default_factory=dict)

    @model_validator(mode="after")
    def _distinct(self) -> ConfigureIdentityBody:
        _distinct_names(self.rate_limits)
        return self
