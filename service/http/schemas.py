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
    model_validator,
)
from pydantic_core import PydanticCustomError

from events.vocabulary import (
    Algorithm,
    Environment,
    ExpiresIn,
    KeyType,
    RateWindow,
    RevokeReason,
)
from service.domain.bulk_revocation import MAX_NAMED_KEYS
from service.domain.durations import parse_grace_period
from service.domain.vocabulary import (
    ACTOR_ID,
    KEY_ID,
    GrantedScope,
    Instant,
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

    @model_validator(mode="after")
    def _fits_its_type(self) -> GenerateKeyBody:
        if self.expires_in is not None and self.expires_at is not None:
            raise ValueError("give either expires_in or expires_at, not both")
        is_embed = self.type == "embed"
        if is_embed and (self.allowed_origins is None or self.resource is None):
            raise ValueError("embed keys need allowed_origins and resource")
        if not is_embed and (self.allowed_origins is not None or self.resource is not None):
            raise ValueError("allowed_origins and resource are for embed keys only")
        if self.type != "signing" and self.algorithm is not None:
            raise ValueError("algorithm is for signing keys only")
        return self


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

    @model_validator(mode="after")
    def _grace(self) -> RotateKeyBody:
        parse_grace_period(self.grace_period)
        return self


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
