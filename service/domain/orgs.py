"""Tenants: org ids, and the reserved org that holds keyledger's own service keys."""

from __future__ import annotations

from service.domain.vocabulary import ORG_ID

# Holds the service keys that call keyledger (docs/api.md#authentication); exempt from the
# active-key limit.
SYSTEM_ORG = "_system"
# Anchored with \A…\Z: whole-string even for a caller that uses ``.match``.
ORG_PATTERN = ORG_ID.regex


def is_tenant_org(value: object) -> bool:
    """A customer's org id (it becomes a NATS subject token); ``_system`` is not one."""
    return ORG_ID.matches(value)


def is_org_id(value: object) -> bool:
    """A tenant id, or the reserved service-key org."""
    return value == SYSTEM_ORG or ORG_ID.matches(value)
