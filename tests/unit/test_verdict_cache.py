"""The LocalVerifier's cache rules, without I/O: what is kept, for how long, what drops it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from keyledger_client.models import VerifyResult
from keyledger_client.verdict_cache import VerdictCache, cache_key, cacheable

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def valid(key_id: str = "key_a", **key: Any) -> VerifyResult:
    return VerifyResult.model_validate(
        {
            "valid": True,
            "code": "VALID",
            "http_status": 200,
            "key": {
                "id": key_id,
                "org_id": "acme",
                "name": "k",
                "type": "secret",
                "environment": "live",
                **key,
            },
        }
    )


def test_the_cache_key_is_a_digest_of_the_secret_and_the_requirements() -> None:
    digest, requirements = cache_key("sk_live_secret", ("b", "a"), "https://o", "r", "live")
    assert len(digest) == 32 and b"sk_live" not in digest
    assert requirements == (("a", "b"), "https://o", "r", "live", None)
    assert cache_key("s", ip="10.0.0.1") != cache_key("s", ip="10.0.0.2")  # per address
    assert cache_key("s", ("a", "b")) == cache_key("s", ("b", "a"))
    assert cache_key("s") != cache_key("t") and cache_key("s") != cache_key("s", ("a",))


def test_only_valid_verdicts_of_unlimited_keys_are_cacheable() -> None:
    assert cacheable(valid())
    assert not cacheable(valid(identity_id="user-1"))  # its identity may have shared limits
    refused = VerifyResult(valid=False, code="REVOKED", http_status=401, key=valid().key)
    assert not cacheable(refused)
    for extra in (
        {"ratelimits": [{"name": "default", "limit": 5}]},
        {"credits_remaining": 10},
    ):
        assert not cacheable(valid().model_copy(update=extra))


def test_an_event_drops_every_verdict_about_its_key_and_only_those() -> None:
    cache = VerdictCache()
    a1, a2, b = cache_key("a"), cache_key("a", ("x",)), cache_key("b")
    since = cache.events_seen
    assert cache.store(a1, valid("key_a"), 0.0, since)
    assert cache.store(a2, valid("key_a"), 0.0, since)
    assert cache.store(b, valid("key_b"), 0.0, since)
    assert cache.note_event("key_a") == 2
    assert cache.get(a1, 1.0, NOW) is None and cache.get(a2, 1.0, NOW) is None
    assert cache.get(b, 1.0, NOW) == valid("key_b")


def test_a_verdict_fetched_while_an_event_of_its_key_arrived_is_not_kept() -> None:
    cache = VerdictCache()
    since = cache.events_seen  # taken before asking the server
    cache.note_event("key_a")  # the revocation arrives while the answer is on its way
    assert not cache.store(cache_key("a"), valid("key_a"), 0.0, since)
    assert cache.store(cache_key("b"), valid("key_b"), 0.0, since)  # another key's event
    assert cache.store(cache_key("a"), valid("key_a"), 0.0, cache.events_seen)


def test_after_clear_nothing_fetched_before_it_is_kept() -> None:
    cache = VerdictCache()
    since = cache.events_seen
    cache.store(cache_key("a"), valid(), 0.0, since)
    cache.clear()
    assert len(cache) == 0 and cache.get(cache_key("a"), 0.0, NOW) is None
    assert not cache.store(cache_key("a"), valid(), 0.0, since)
    assert cache.store(cache_key("a"), valid(), 0.0, cache.events_seen)


def test_a_verdict_ends_at_the_keys_expiry_and_after_max_age() -> None:
    cache = VerdictCache(max_age=60.0)
    expiring = valid("key_e", expires_at=(NOW + timedelta(seconds=5)).isoformat())
    cache.store(cache_key("e"), expiring, 0.0, 0)
    cache.store(cache_key("f"), valid("key_f"), 0.0, 0)
    assert cache.get(cache_key("e"), 1.0, NOW + timedelta(seconds=4)) == expiring
    assert cache.get(cache_key("e"), 1.0, NOW + timedelta(seconds=5)) is None
    assert cache.get(cache_key("f"), 59.0, NOW) is not None
    assert cache.get(cache_key("f"), 60.0, NOW) is None
    assert len(cache) == 0


def test_the_cache_holds_at_most_max_entries_dropping_the_oldest() -> None:
    cache = VerdictCache(max_entries=2)
    for name in "abc":
        cache.store(cache_key(name), valid(f"key_{name}"), 0.0, 0)
    assert len(cache) == 2 and cache.get(cache_key("a"), 0.0, NOW) is None
    assert cache.note_event("key_a") == 0  # its index entry went with it
    assert cache.get(cache_key("c"), 0.0, NOW) is not None


def test_forgotten_event_history_refuses_old_fetches() -> None:
    cache = VerdictCache(max_entries=2)
    since = cache.events_seen
    for name in "abc":  # key_a's event falls out of the remembered history
        cache.note_event(f"key_{name}")
    assert not cache.store(cache_key("a"), valid("key_a"), 0.0, since)
