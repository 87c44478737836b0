"""Request bodies, validated strictly: unknown fields are refused.

Every identifier and text field is a type of the input vocabulary
(``service.domain.vocabulary``), so what a body may carry into an event is
decided in one place (docs/security.md §1).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from events.models import EVENT_TYPES
from events.vocabulary import (
    Algorithm,
    Environment,
    ExpiresIn,
    KeyType,
    RateWindow,
    RevokeReason,
)
from service.domain.durations import parse_grace_period
from service.domain.vocabulary import (
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


class RegisterWebhookBody(StrictBody):
    url: Annotated[StrictStr, Field(min_length=1, max_length=2048)]
    # Empty or absent: every event type.
    event_types: Annotated[list[StrictStr], Field(max_length=32)] = Field(default_factory=list)

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event types; known: {', '.join(EVENT_TYPES)}")
        return list(dict.fromkeys(value))
