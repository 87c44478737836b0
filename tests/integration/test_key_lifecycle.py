"""The key use cases without HTTP: what HTTP, the CLI, benchmarks and tests all call.

``service.key_lifecycle`` takes plain values and answers in domain terms
(state, events, ``created``, ``replayed``, the once-only material); the
composition root (``service.bootstrap``) wires them to the index.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from events.models import Actor
from service.bootstrap import running
from service.clock import utc_now
from service.domain import key_material
from service.domain.durations import expiry_from
from service.domain.orgs import SYSTEM_ORG
from service.errors import KeyledgerError
from service.http.context import KEYLEDGER
from service.key_commands import IdempotentRequest, KeyCommandHandler
from service.key_lifecycle import Issuer, KeyLifecycle, NewKey
from service.service_keys import issue_service_key, new_service_key
from service.settings import Settings
from service.store.idempotency import IdempotencyStore
from tests.support.api import new_org

ACTOR = Actor(id="test:lifecycle")


@pytest.fixture
def keys(client: TestClient) -> KeyLifecycle:
    """The running service's use cases (their commits reach its index)."""
    return client.app[KEYLEDGER].keys


def issuer(org_id: str | None = None, **conditions: Any) -> Issuer:
    return Issuer(org_id or new_org(), ACTOR, **conditions)


def fingerprint(request: str) -> str:
    return IdempotentRequest.fingerprint_of("POST", "/test", {"request": request})


async def refusal(code: str, call: Any) -> KeyledgerError:
    with pytest.raises(KeyledgerError) as refused:
        await call
    assert refused.value.code == code, refused.value
    return refused.value


async def test_generate_hands_out_the_secret_and_answers_in_domain_terms(
    keys: KeyLifecycle, client: TestClient, settings: Settings
) -> None:
    new = NewKey(name="bot", type="secret", scopes=("a:read", "a:read", "b:*"))
    issued = await keys.generate(issuer(), new)
    outcome, state = issued.outcome, issued.outcome.state
    assert state is not None and outcome.created and not outcome.replayed
    secret = issued.handed_out["secret"]
    assert secret is not None and secret.startswith("sk_live_")
    assert state.secret_hash == key_material.secret_hash(settings.pepper_bytes, secret)
    assert state.scopes == ("a:read", "b:*")  # repeats dropped, order kept
    assert [e.event_type for e in outcome.events] == ["KeyGenerated"]
    assert outcome.position == state.position == outcome.events[0].position
    assert outcome.key["id"] == state.key_id and secret not in json.dumps(outcome.key)
    # Answered only once this replica's index has the key.
    assert client.app[KEYLEDGER].index.by_key_id(state.key_id) is not None


@pytest.mark.parametrize(
    ("new", "handed_out"),
    [
        (NewKey(name="s", type="secret", environment="test"), "secret"),
        (
            NewKey(name="e", type="embed", allowed_origins=("https://a.example",), resource="r"),
            "secret",
        ),
        (NewKey(name="k", type="signing"), "private_key"),
        (NewKey(name="k", type="signing", algorithm="rsa-2048"), "private_key"),
    ],
)
async def test_each_key_type_gets_its_material(
    keys: KeyLifecycle, new: NewKey, handed_out: str
) -> None:
    issued = await keys.generate(issuer(), new)
    state = issued.outcome.state
    assert state is not None and list(issued.handed_out) == [handed_out]
    if new.type == "signing":
        assert state.algorithm == (new.algorithm or "ed25519") and state.public_key
        assert state.secret_hash is None
    else:
        assert state.algorithm is None and state.public_key is None
        prefix = {"secret": "sk", "embed": "rk"}[new.type]
        assert str(issued.handed_out["secret"]).startswith(f"{prefix}_{new.environment}_")


async def test_expiry_is_resolved_by_the_use_case(keys: KeyLifecycle) -> None:
    issued = await keys.generate(issuer(), NewKey(name="x", type="secret", expires_in="30d"))
    state = issued.outcome.state
    assert state is not None and state.expires_at == expiry_from("30d", state.created_at)
    at = utc_now() + timedelta(days=2)
    issued = await keys.generate(issuer(), NewKey(name="x", type="secret", expires_at=at))
    assert issued.outcome.state is not None and issued.outcome.state.expires_at == at
    for past in (utc_now() - timedelta(seconds=1), utc_now() - timedelta(days=400)):
        await refusal(
            "validation_error", keys.generate(issuer(), NewKey("x", "secret", expires_at=past))
        )


async def test_a_replay_returns_the_first_outcome_without_the_secret(keys: KeyLifecycle) -> None:
    org = new_org()
    retry = issuer(org, idempotent=IdempotentRequest("retry-1", fingerprint("a")))
    first = await keys.generate(retry, NewKey(name="once", type="secret"))
    again = await keys.generate(retry, NewKey(name="once", type="secret"))
    assert again.outcome.replayed and again.outcome.created
    assert again.outcome.state is None and again.outcome.events == ()
    assert again.handed_out == {"secret": None}
    assert (again.outcome.key, again.outcome.position) == (
        first.outcome.key,
        first.outcome.position,
    )

    assert first.outcome.state is not None
    key_id = first.outcome.state.key_id
    rotate = issuer(org, idempotent=IdempotentRequest("retry-2", fingerprint("b")))
    rotated = await keys.rotate(rotate, key_id, "1h")
    replayed = await keys.rotate(rotate, key_id, "1h")
    assert not rotated.outcome.created and not replayed.outcome.created
    assert replayed.outcome.replayed and replayed.handed_out == {"secret": None}

    reused = issuer(org, idempotent=IdempotentRequest("retry-1", fingerprint("other")))
    await refusal("idempotency_key_reused", keys.rename(reused, key_id, "other"))


async def test_rows_stored_by_earlier_versions_still_replay(pool: asyncpg.Pool) -> None:
    key = {"id": "k_1", "version": 1}
    async with pool.acquire() as conn:
        for number, status in (("1", 201), ("2", 200)):
            await conn.execute(
                """INSERT INTO idempotency_keys
                       (caller_key_id, idempotency_key, request_hash, status, response)
                   VALUES ('old-caller', $1, 'h', $2, $3)""",
                f"old-{number}",
                status,
                json.dumps({"key": key, "position": 7}),
            )
        store = IdempotencyStore(24)
        created = await store.find(conn, "old-caller", "old-1")
        changed = await store.find(conn, "old-caller", "old-2")
    assert created is not None and changed is not None
    assert (created.created, created.key, created.position) == (True, key, 7)
    assert not changed.created


async def test_commands_on_an_existing_key(keys: KeyLifecycle) -> None:
    org = new_org()
    first = await keys.generate(issuer(org), NewKey(name="k", type="secret"))
    assert first.outcome.state is not None
    key_id = first.outcome.state.key_id
    steps: list[tuple[Callable[[Issuer], Any], str, str]] = [
        (lambda who: keys.rename(who, key_id, "renamed"), "KeyRenamed", "active"),
        (lambda who: keys.disable(who, key_id, "paused"), "KeyDisabled", "disabled"),
        (lambda who: keys.enable(who, key_id), "KeyEnabled", "active"),
        (lambda who: keys.revoke(who, key_id, "compromised"), "KeyRevoked", "revoked"),
    ]
    version = 1
    for run, event_type, status in steps:
        outcome = await run(issuer(org, if_match=version))
        assert outcome.state is not None and not outcome.created and not outcome.replayed
        assert [e.event_type for e in outcome.events] == [event_type]
        assert outcome.state.status == status and outcome.key["status"] == status
        version = outcome.state.version
    await refusal("version_mismatch", keys.rename(issuer(org, if_match=1), key_id, "late"))


async def test_rotate_preloads_the_key_it_rotates(keys: KeyLifecycle) -> None:
    org = new_org()
    signing = await keys.generate(
        issuer(org), NewKey(name="s", type="signing", algorithm="rsa-2048")
    )
    assert signing.outcome.state is not None
    key_id = signing.outcome.state.key_id
    rotated = await keys.rotate(issuer(org), key_id, "0s")
    state = rotated.outcome.state
    assert state is not None and state.algorithm == "rsa-2048"
    assert list(rotated.handed_out) == ["private_key"]
    assert state.public_key != signing.outcome.state.public_key
    for who, key in ((issuer(org), "key_01HZZZZZZZZZZZZZZZZZZZZZ"), (issuer(), key_id)):
        await refusal("key_not_found", keys.rotate(who, key, "1h"))


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        (NewKey(name="s", type="signing", scopes=("admin",)), "secret keys"),
        (
            NewKey(name="e", type="embed", allowed_origins=("https://a.example",), resource="r"),
            "secret keys",
        ),
        (NewKey(name="s", type="secret", scopes=("templates:read",)), "scopes must be among"),
        (NewKey(name="s", type="secret", scopes=("admin", "root")), "scopes must be among"),
        (NewKey(name="s", type="secret", metadata={"orgs": "acme"}), "metadata.orgs"),
        (NewKey(name="s", type="secret", metadata={"orgs": ["_system"]}), "metadata.orgs"),
        (NewKey(name="s", type="secret", metadata={"orgs": ["Not An Org"]}), "metadata.orgs"),
    ],
)
async def test_the_service_key_rules_hold_for_every_entrypoint(
    keys: KeyLifecycle, new: NewKey, problem: str
) -> None:
    refused = await refusal("validation_error", keys.generate(issuer(SYSTEM_ORG), new))
    assert problem in refused.message
    # The same key asked for in a tenant org is no service key: the rules do not apply.
    if new.type == "secret" and not new.metadata:
        assert (await keys.generate(issuer(), new)).outcome.created


async def test_issue_service_key_runs_the_same_use_case(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    pepper = settings.pepper_bytes
    issued = await issue_service_key(
        pool, pepper, name="svc", scopes=["keys:read"], orgs=["acme"], actor=ACTOR
    )
    assert issued.position > 0 and issued.key_id.startswith("key_")
    commands = KeyCommandHandler(pool, max_active_keys=0)
    state = await commands.load_state(SYSTEM_ORG, issued.key_id)
    assert state is not None and state.metadata == {"orgs": ["acme"]}
    assert state.secret_hash == key_material.secret_hash(pepper, issued.secret)
    for scopes, orgs in ((["root"], None), (["admin"], ["Not An Org"])):
        with pytest.raises(KeyledgerError) as refused:
            await issue_service_key(pool, pepper, name="svc", scopes=scopes, orgs=orgs, actor=ACTOR)
        assert refused.value.code == "validation_error"
    for name in ("", " ", "a\x00b", "x" * 101):
        with pytest.raises(KeyledgerError):
            new_service_key(name, ["admin"])


async def test_bootstrap_runs_and_stops_one_wired_replica(settings: Settings) -> None:
    async with running(settings) as service:
        # No relay without NATS: the index and the projections are handed each commit.
        assert service.commands.committed == [
            service.feed.apply_committed,
            service.projections.hand_over,
        ]
        assert service.commands.write_guard is not None and service.index.following
        issued = await service.keys.generate(issuer(), NewKey(name="k", type="secret"))
        assert issued.outcome.state is not None
        assert service.index.by_key_id(issued.outcome.state.key_id) is not None
        vitals = await service.vitals.read()
        assert vitals.database_ok and vitals.index_position == service.index.position
        assert service.relay is None  # no NATS in these settings
    assert service.commands.write_guard is None and not service.index.following
    assert service.pool.is_closing()
