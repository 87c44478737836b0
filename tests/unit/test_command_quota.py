"""``with_quota``: a command with the active-key count the shell read, all else unchanged."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from events.models import RateLimit
from service.domain.commands import ActiveKeyQuota, EnableKey, GenerateKey, with_quota

AT = datetime(2026, 1, 1, tzinfo=UTC)
QUOTA = ActiveKeyQuota(active=3, limit=10)


def test_a_generate_key_keeps_every_field_but_its_quota() -> None:
    command = GenerateKey(
        key_id="key_1",
        org_id="acme",
        name="k",
        type="secret",
        environment="test",
        issued_at=AT,
        scopes=("a",),
        metadata={"m": 1},
        rate_limit=RateLimit(limit=5, window="1m"),
        identity_id="id_1",
    )
    quoted = with_quota(command, QUOTA)
    assert type(quoted) is GenerateKey
    assert quoted == dataclasses.replace(command, quota=QUOTA)
    assert quoted.quota is QUOTA and command.quota != QUOTA


def test_an_enable_key_keeps_every_field_but_its_quota() -> None:
    command = EnableKey(key_id="key_1", issued_at=AT)
    quoted = with_quota(command, QUOTA)
    assert type(quoted) is EnableKey
    assert quoted == dataclasses.replace(command, quota=QUOTA)
