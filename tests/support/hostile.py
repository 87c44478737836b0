"""Hostile input for property tests: text of every Unicode category, deep JSON, odd instants.

``accepted_events`` runs a request body the way the API does (JSON bytes →
``body._decode`` → the command schema) and, when the schema accepts it,
turns it into the events the decider writes. The property tests then show
that everything downstream (canonical JSON, the hash chain, ``events.decode``,
the NATS subject builder, PostgreSQL) accepts those events too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

from hypothesis import strategies as st

from events.codec import GENESIS_HASH, seal
from events.models import Actor, Envelope, KeyEvent, RateLimit
from service.clock import utc_now
from service.domain import key_material
from service.domain.commands import (
    DisableKey,
    GenerateKey,
    RenameKey,
    RevokeKey,
    RotateKey,
    UpdateKey,
)
from service.domain.decider import decide, evolve
from service.domain.durations import expiry_from, parse_grace_period
from service.domain.ids import new_key_id
from service.errors import KeyledgerError
from service.http.body import decode_json, parse_model
from service.http.key_routes import update_changes
from service.http.schemas import (
    DisableKeyBody,
    GenerateKeyBody,
    RenameKeyBody,
    RevokeKeyBody,
    UpdateKeyBody,
    rate_limits_of,
)

# Characters that broke something once, or could: Cc (NUL, ESC, DEL, C1), lone
# surrogates (from JSON "\ud800" or a raw 0xFF byte), line and format separators,
# NATS subject syntax, JSON syntax, and the start of a secret.
NASTY = (
    "\x00",
    "\t",
    "\n",
    "\r",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9f",
    "\ud800",
    "\udbff\udc00",
    "\udcff",
    "\u2028",
    "\ufeff",
    "\U0010ffff",
    ".",
    "*",
    ">",
    " ",
    "\\",
    '"',
    "sk_live_",
)
hostile_text = st.lists(
    st.characters(exclude_categories=()) | st.sampled_from(NASTY), max_size=16
).map("".join)
# Text that is often acceptable, so that accepted bodies are common too.
mostly_plain = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=24)
texts = hostile_text | mostly_plain | st.sampled_from(NASTY)


def nested(depth: int, leaf: Any = "x") -> st.SearchStrategy[Any]:
    """A JSON value exactly ``depth`` containers deep, objects and arrays mixed."""
    strategy: st.SearchStrategy[Any] = st.just(leaf)
    for _ in range(depth):
        strategy = strategy.flatmap(lambda inner: st.sampled_from([{"k": inner}, [inner]]))
    return strategy


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=10,
)
metadata = st.dictionaries(
    texts, json_values | st.integers(0, 12).flatmap(nested), max_size=4
) | st.integers(6, 11).map(lambda n: {"deep": nest_plain(n)})


def nest_plain(depth: int) -> Any:
    """``{"k": {"k": … "x"}}``, ``depth`` objects deep."""
    value: Any = "x"
    for _ in range(depth):
        value = {"k": value}
    return value


offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.builds(
    lambda moment, zone: moment.replace(tzinfo=UTC).astimezone(zone).isoformat(),
    st.datetimes(min_value=datetime(2030, 1, 1), max_value=datetime(9999, 12, 30)),
    offsets,
) | st.sampled_from(
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59.999999+00:01",
        "2030-01-01T00:00:00",
        "2030-01-01T00:00:00\n",
        "\u0662\u0660\u0663\u0660-01-01T00:00:00Z",
    ]
)
scopes = st.lists(
    st.from_regex(r"\A[a-z][a-z0-9_.:-]{0,10}\*?\Z") | texts | st.just("orders:read\n"),
    max_size=4,
)
origins = st.lists(
    st.sampled_from(["https://app.example.com", "http://localhost:3000", "https://[::1]:8443"])
    | st.builds(lambda t: f"https://{t}.example", texts)
    | st.just("https://a.example\n")
    | st.just("https://\u212a.example"),
    min_size=1,
    max_size=3,
)
limit_names = st.sampled_from(["default", "burst", "daily", "Burst", "a\n", ""]) | texts
rate_limit_lists = st.lists(
    st.fixed_dictionaries(
        {
            "name": limit_names,
            "limit": st.integers(-1, 10**10) | st.sampled_from([True, 5.0, "5"]),
            "window": st.sampled_from(["1s", "1m", "1h", "1d", "1w"]),
        }
    ),
    max_size=7,
)
credit_values = st.none() | st.fixed_dictionaries(
    {"remaining": st.integers(-1, 10**16) | st.just(2.5)},
    optional={
        "refill": st.none()
        | st.fixed_dictionaries(
            {
                "amount": st.integers(-1, 10**16),
                "interval": st.sampled_from(["daily", "monthly", "weekly"]),
            },
            optional={"day": st.integers(-1, 40) | st.none()},
        )
    },
)
cidr_lists = st.lists(
    st.sampled_from(
        [
            "10.0.0.0/8",
            "10.0.0.1/8",
            "192.168.1.7",
            "2001:db8::/32",
            "::ffff:10.0.0.0/104",
            "fe80::1%eth0",
            "10.0.0.0/33",
            "0.0.0.0/0",
            "::/0",
            " 10.0.0.0/8",
            "10.0.0.0/8\n",
        ]
    )
    | texts,
    max_size=5,
)
generate_bodies = st.fixed_dictionaries(
    {
        "name": mostly_plain | texts,
        "type": st.sampled_from(["secret", "secret", "embed", "signing"]),
    },
    optional={
        "environment": st.sampled_from(["live", "test", "live\n"]),
        "expires_in": st.sampled_from(["never", "30d", "90d", "6mo", "1y"]),
        "expires_at": instants,
        "scopes": scopes,
        "allowed_origins": origins,
        "resource": texts,
        "algorithm": st.sampled_from(["ed25519", "rsa-2048"]),
        "metadata": metadata,
        "rate_limit": st.fixed_dictionaries(
            {
                "limit": st.integers(-1, 10**20) | st.floats(allow_nan=False),
                "window": st.sampled_from(["1s", "1m", "1h", "1d"]),
            }
        ),
        "rate_limits": rate_limit_lists,
        "credits": credit_values,
        "allowed_cidrs": cidr_lists,
        "identity_id": texts,
    },
)
update_bodies = st.fixed_dictionaries(
    {},
    optional={
        "name": st.none() | texts,
        "scopes": st.none() | scopes,
        "metadata": st.none() | metadata,
        "rate_limits": st.none() | rate_limit_lists,
        "rate_limit": st.none()
        | st.fixed_dictionaries(
            {"limit": st.integers(-1, 100), "window": st.sampled_from(["1s", "1d"])}
        ),
        "credits": credit_values,
        "allowed_origins": st.none() | origins,
        "allowed_cidrs": st.none() | cidr_lists,
        "expires_at": st.none() | instants,
        "identity_id": st.none() | texts,
        "expires_on": st.just("2030-01-01T00:00:00Z"),
    },
)
rename_bodies = st.fixed_dictionaries({"name": texts})
disable_bodies = st.fixed_dictionaries({}, optional={"reason": texts})
revoke_bodies = st.fixed_dictionaries(
    {"reason": st.sampled_from(["compromised", "unused", "rotated", "leaked", "other"]) | texts}
)
rotate_bodies = st.fixed_dictionaries(
    {},
    optional={
        "grace_period": st.sampled_from(["0s", "24h", "7d", "8d", "24h\n", "\u0663h"])
        | st.from_regex(r"\A[0-9]{1,8}[smhd]\Z")
        | texts
    },
)


def parsed(model: type[Any], body: Any) -> Any | None:
    """The body as the API would parse it, or None when the API refuses it (4xx)."""
    raw = json.dumps(body).encode()
    try:
        return parse_model(model, decode_json(raw))
    except KeyledgerError as exc:
        assert exc.code in ("validation_error", "malformed_json", "invalid_json"), exc.code
        return None


def generated(org_id: str, body: GenerateKeyBody) -> list[KeyEvent]:
    """The events of a GenerateKey with this accepted body (as ``key_routes`` builds it)."""
    now = utc_now()
    secret = key_material.new_secret("secret", body.environment)
    command = GenerateKey(
        key_id=new_key_id(),
        org_id=org_id,
        name=body.name,
        type=body.type,
        environment=body.environment,
        issued_at=now,
        scopes=tuple(dict.fromkeys(body.scopes)),
        allowed_origins=tuple(dict.fromkeys(body.allowed_origins or ())),
        resource=body.resource,
        algorithm=(body.algorithm or "ed25519") if body.type == "signing" else None,
        metadata=body.metadata,
        rate_limit=RateLimit(**body.rate_limit.model_dump()) if body.rate_limit else None,
        rate_limits=rate_limits_of(body.rate_limits, None),
        credits=body.credits.credits() if body.credits else None,
        allowed_cidrs=tuple(body.allowed_cidrs),
        identity_id=body.identity_id,
        expires_at=body.expires_at or expiry_from(body.expires_in or "never", now),
        secret_hash=key_material.secret_hash(b"pepper", secret),
        hint=key_material.hint(secret),
    )
    return decide(command, None)


def changed(org_id: str, model: type[Any], body: Any) -> list[KeyEvent]:
    """The events of a Rename/Disable/Revoke/Rotate with this accepted body, on a fresh key."""
    base = generated(org_id, GenerateKeyBody(name="base", type="secret"))
    state = evolve(None, base[0])
    key_id, now = state.key_id, utc_now()
    if model is RenameKeyBody:
        command: Any = RenameKey(key_id=key_id, name=body.name, issued_at=now)
    elif model is DisableKeyBody:
        command = DisableKey(key_id=key_id, reason=body.reason, issued_at=now)
    elif model is RevokeKeyBody:
        command = RevokeKey(key_id=key_id, reason=body.reason, issued_at=now)
    else:
        command = RotateKey(
            key_id=key_id,
            issued_at=now,
            grace_period=parse_grace_period(body.grace_period),
            secret_hash="0" * 64,
            hint="sk_live_0000…0000",
        )
    return decide(command, state)


def updated(org_id: str, body: UpdateKeyBody) -> list[KeyEvent]:
    """The events of a PATCH with this accepted body on a fresh embed key (as the route builds
    it); an ``expires_at`` in the past is the decider's 422, so it is left out."""
    base = GenerateKeyBody(
        name="base", type="embed", resource="r", allowed_origins=["https://a.example"]
    )
    state = evolve(None, generated(org_id, base)[0])
    changes = update_changes(body)
    if changes.get("expires_at") is not None and changes["expires_at"] <= utc_now():
        del changes["expires_at"]
    return decide(UpdateKey(key_id=state.key_id, issued_at=utc_now(), **changes), state)


def sealed(event: KeyEvent, actor: Actor | None = None) -> Envelope:
    """``event`` as the first envelope of a log."""
    return seal(
        event,
        event_id=uuid4(),
        stream_version=1,
        position=1,
        actor=actor or Actor(id="key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"),
        previous_hash=GENESIS_HASH,
    )
