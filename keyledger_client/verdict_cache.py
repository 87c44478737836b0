"""The LocalVerifier's cache of VALID verdicts: no I/O, so every rule is unit-tested alone.

Entries are keyed by the SHA-256 of the secret (never the secret itself) and the
requirements checked, and indexed by key id, so any event of a key drops every
verdict about it at once. An entry also ends at the key's own ``expires_at`` and
after ``max_age`` seconds whatever happens.

A verdict fetched while an event of its key arrived is not stored: the answer may
predate the event, and nothing would evict it afterwards. ``note_event`` counts
events so ``store`` can tell (``since`` is the count taken before the fetch).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from keyledger_client.models import VerifyResult

Requirements = tuple[tuple[str, ...], str | None, str | None, str | None, str | None]
CacheKey = tuple[bytes, Requirements]


def cache_key(
    secret: str,
    scopes: tuple[str, ...] = (),
    origin: str | None = None,
    resource: str | None = None,
    environment: str | None = None,
    ip: str | None = None,
) -> CacheKey:
    """What a verdict is about: the secret's SHA-256 and the requirements checked (the
    client's ``ip`` among them: a key with an IP allowlist answers per address)."""
    digest = hashlib.sha256(secret.encode("utf-8")).digest()
    return digest, (tuple(sorted(scopes)), origin, resource, environment, ip)


def cacheable(result: VerifyResult) -> bool:
    """Whether a verdict may be answered again without asking keyledger.

    Only VALID verdicts of keys without a rate limit, credits or an identity (whose
    shared limits are counted by keyledger) are: every answer about such a key
    must be counted where the counts are.
    """
    key = result.key
    return (
        result.valid
        and key is not None
        and not result.ratelimits
        and result.credits_remaining is None
        and key.identity_id is None
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    result: VerifyResult
    key_id: str
    until: float  # monotonic seconds


class VerdictCache:
    """VALID verdicts by secret digest and requirements, dropped by key id."""

    def __init__(self, max_entries: int = 100_000, max_age: float = 300.0) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._by_key: dict[str, set[CacheKey]] = {}
        self.events_seen = 0
        # key id -> events_seen when its last event arrived (kept for keys that have entries
        # or recent events; older ones fall below ``_forgotten_before``).
        self._last_event: OrderedDict[str, int] = OrderedDict()
        self._forgotten_before = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey, now: float, wall: datetime) -> VerifyResult | None:
        """The cached verdict, or None (also when it has reached its end)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at = entry.result.key.expires_at if entry.result.key else None
        if now >= entry.until or (expires_at is not None and expires_at <= wall):
            self._drop(key, entry)
            return None
        return entry.result

    def store(self, key: CacheKey, result: VerifyResult, now: float, since: int) -> bool:
        """Keep ``result`` unless it may not be cached or an event of its key came ``since``."""
        if not cacheable(result) or result.key is None:
            return False
        key_id = result.key.id
        if since < self._forgotten_before or self._last_event.get(key_id, -1) > since:
            return False
        if key in self._entries:
            self._drop(key, self._entries[key])
        while len(self._entries) >= self.max_entries:
            oldest, entry = next(iter(self._entries.items()))
            self._drop(oldest, entry)
        self._entries[key] = _Entry(result, key_id, now + self.max_age)
        self._by_key.setdefault(key_id, set()).add(key)
        return True

    def note_event(self, key_id: str) -> int:
        """An event of ``key_id`` arrived: drop its verdicts. Returns how many were dropped."""
        self.events_seen += 1
        self._last_event[key_id] = self.events_seen
        self._last_event.move_to_end(key_id)
        while len(self._last_event) > self.max_entries:
            _, seen = self._last_event.popitem(last=False)
            self._forgotten_before = max(self._forgotten_before, seen)
        dropped = self._by_key.pop(key_id, set())
        for key in dropped:
            self._entries.pop(key, None)
        return len(dropped)

    def clear(self) -> None:
        """Forget every verdict, and refuse those fetched before now (events may be lost)."""
        self._entries.clear()
        self._by_key.clear()
        self.events_seen += 1
        self._forgotten_before = self.events_seen

    def _drop(self, key: CacheKey, entry: _Entry) -> None:
        self._entries.pop(key, None)
        keys = self._by_key.get(entry.key_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_key[entry.key_id]
