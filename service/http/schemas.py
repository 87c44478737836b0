"""Request bodies, validated strictly: unknown fields are refused (SPEC §4)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from events.models import RevokeReason
from service.callers import SERVICE_SCOPES
from service.domain.durations import parse_grace_period
from service.domain.orgs import ORG_PATTERN
from service.errors import KeyledgerError

_SCOPE = re.compile(r"^[a-z][a-z0-9_.:*-]{0,63}$")
_ORIGIN = re.compile(
    r"^https?://(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
    r"|\[[0-9a-f:.]+\])(?::\d{1,5})?$"
)
MAX_METADATA_BYTES = 4096


def _scope(value: str) -> str:
    if not _SCOPE.match(value):
        raise ValueError("a scope is lower-case letters, digits and _.:- (at most 64)")
    if "*" in value and (value.count("*") > 1 or not value.endswith("*")):
        raise ValueError("'*' is only allowed as the last character of a scope")
    return value


def _origin(value: str) -> str:
    lowered = value.lower()
    if not _ORIGIN.match(lowered):
        raise ValueError("an origin is scheme://host[:port], without path or trailing slash")
    return lowered


def _name(value: str) -> str:
    if not value.strip():
        raise ValueError("the name must not be blank")
    return value


Name = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_name)]
Scope = Annotated[str, AfterValidator(_scope)]
Origin = Annotated[str, StringConstraints(max_length=300), AfterValidator(_origin)]


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitBody(StrictBody):
    limit: Annotated[int, Field(ge=1, le=1_000_000_000)]
    window: Literal["1s", "1m", "1h"]


class GenerateKeyBody(StrictBody):
    name: Name
    type: Literal["secret", "embed", "signing"]
    environment: Literal["live", "test"] = "live"
    expires_in: Literal["never", "30d", "90d", "6mo", "1y"] | None = None
    expires_at: datetime | None = None
    scopes: Annotated[list[Scope], Field(max_length=100)] = Field(default_factory=list)
    allowed_origins: Annotated[list[Origin], Field(min_length=1, max_length=50)] | None = None
    resource: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    algorithm: Literal["ed25519", "rsa-2048"] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    rate_limit: RateLimitBody | None = None

    @model_validator(mode="after")
    def _fits_its_type(self) -> GenerateKeyBody:
        if self.expires_in is not None and self.expires_at is not None:
            raise ValueError("give either expires_in or expires_at, not both")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a timezone (e.g. 2030-01-01T00:00:00Z)")
        if len(json.dumps(self.metadata, separators=(",", ":"))) > MAX_METADATA_BYTES:
            raise ValueError("metadata must be at most 4 KiB of JSON")
        is_embed = self.type == "embed"
        if is_embed and (self.allowed_origins is None or self.resource is None):
            raise ValueError("embed keys need allowed_origins and resource")
        if not is_embed and (self.allowed_origins is not None or self.resource is not None):
            raise ValueError("allowed_origins and resource are for embed keys only")
        if self.type != "signing" and self.algorithm is not None:
            raise ValueError("algorithm is for signing keys only")
        return self


def check_service_key(body: GenerateKeyBody) -> None:
    """Extra rules for keys in the ``_system`` org: they are service keys."""
    problem = None
    orgs = body.metadata.get("orgs")
    if body.type != "secret":
        problem = "service keys are secret keys"
    elif not set(body.scopes) <= set(SERVICE_SCOPES):
        problem = f"service key scopes must be among {', '.join(SERVICE_SCOPES)}"
    elif orgs is not None and not (
        isinstance(orgs, list) and all(isinstance(o, str) and ORG_PATTERN.match(o) for o in orgs)
    ):
        problem = "metadata.orgs must be a list of org ids"
    if problem:
        raise KeyledgerError("validation_error", problem, [{"loc": ["body"], "msg": problem}])


class RenameKeyBody(StrictBody):
    name: Name


class DisableKeyBody(StrictBody):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None


class EnableKeyBody(StrictBody):
    pass


class RevokeKeyBody(StrictBody):
    reason: RevokeReason


class RotateKeyBody(StrictBody):
    grace_period: str = "24h"

    @model_validator(mode="after")
    def _grace(self) -> RotateKeyBody:
        parse_grace_period(self.grace_period)
        return self
