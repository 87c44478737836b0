"""The closed word lists of keyledger, written once.

Events, commands, request bodies, answers, query filters and the OpenAPI
document all take these types (or the tuples derived from them), so adding a
key type or a window is one edit here, and a misspelt literal anywhere else is
a type error. They live in ``keyledger_client.events`` because the events are the contract a
subscriber reads, and ``keyledger_client.events`` imports nothing of the service.

(What an identifier or a text may look like is a different question, answered
by ``service.domain.vocabulary``.)
"""

from __future__ import annotations

from typing import Final, Literal, get_args

KeyType = Literal["secret", "embed", "signing"]
Environment = Literal["live", "test"]
Status = Literal["active", "disabled", "revoked", "expired"]
Algorithm = Literal["ed25519", "rsa-2048"]
RevokeReason = Literal["compromised", "unused", "rotated", "leaked", "other"]
RateWindow = Literal["1s", "1m", "1h", "1d"]
RefillInterval = Literal["daily", "monthly"]
ExpiresIn = Literal["never", "30d", "90d", "6mo", "1y"]

KEY_TYPES: Final[tuple[KeyType, ...]] = get_args(KeyType)
ENVIRONMENTS: Final[tuple[Environment, ...]] = get_args(Environment)
STATUSES: Final[tuple[Status, ...]] = get_args(Status)
ALGORITHMS: Final[tuple[Algorithm, ...]] = get_args(Algorithm)
REVOKE_REASONS: Final[tuple[RevokeReason, ...]] = get_args(RevokeReason)
RATE_WINDOWS: Final[tuple[RateWindow, ...]] = get_args(RateWindow)
EXPIRES_IN_CHOICES: Final[tuple[ExpiresIn, ...]] = get_args(ExpiresIn)
REFILL_INTERVALS: Final[tuple[RefillInterval, ...]] = get_args(RefillInterval)

# A key in one of these statuses never changes again (only revoke of an expired key).
TERMINAL_STATUSES: Final[frozenset[Status]] = frozenset({"revoked", "expired"})
# The statuses that may still turn ``expired`` once ``expires_at`` has passed.
LIVE_STATUSES: Final[frozenset[Status]] = frozenset({"active", "disabled"})

RATE_WINDOW_SECONDS: Final[dict[RateWindow, int]] = {"1s": 1, "1m": 60, "1h": 3600, "1d": 86400}
