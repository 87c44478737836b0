"""Tenants: org ids, and the reserved org that holds keyledger's own service keys."""

from __future__ import annotations

import re

# Holds the service keys that call keyledger (SPEC §8); exempt from the active-key limit.
SYSTEM_ORG = "_system"
ORG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def is_org_id(value: str) -> bool:
    """A tenant id (it becomes a NATS subject token), or the reserved service-key org."""
    return value == SYSTEM_ORG or bool(ORG_PATTERN.match(value))
