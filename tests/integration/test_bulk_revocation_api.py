"""``POST /v1/orgs/{org}/revocations`` over HTTP: selections, one transaction, replays, refusals."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from events.models import Actor
from service.service_keys import IssuedServiceKey, issue_service_key
from service.settings import Settings
from tests.support.api import Api, indexed, new_org
from tests.support.poison import inject, isolated_app


async def service_key(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, scopes: list[str], **extra: Any
) -> IssuedServiceKey:
    issued = await issue_service_key(
        pool, settings.pepper_bytes, name="bulk", scopes=scopes, actor=Actor(id="test"), **extra
    )
    await indexed(client, issued.position)
    return issued


async def verify(api: Api, secret: str) -> str:
    status, _, verdict = await api.post("/v1/verify", {"key": secret})
    assert status == 200, verdict
    code: str = verdict["code"]
    return code


async def revocations(
    api: Api, org: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    status, _, payload = await api.post(f"/v1/orgs/{org}/revocations", body, headers=headers)
    return status, payload


async def head(pool: asyncpg.Pool) -> int:
    value: int = await pool.fetchval("SELECT coalesce(max(position), 0) FROM events")
    return value


async def test_named_keys_are_revoked_in_one_transaction_with_the_requests_actor(
    api: Api, pool: asyncpg.Pool
) -> None:
    org = new_org()
    made = [await api.generate(org, name=f"k{n}") for n in range(3)]
    ids = [m["key"]["id"] for m in made]
    await api.post(f"/v1/orgs/{org}/keys/{ids[1]}/revoke", {"reason": "unused"})

    status, answer = await revocations(
        api,
        org,
        {"reason": "compromised", "key_ids": ids},
        headers={"X-Request-Id": "incident-42", "X-On-Behalf-Of": "user:7"},
    )

    assert status == 200, answer
    assert answer == {
        "revoked": [ids[0], ids[2]],
        "already_terminal": [ids[1]],
        "quarantined": [],
        "position": answer["position"],
    }
    rows = await pool.fetch(
        "SELECT key_id, position, actor::text AS actor, data::text AS data, xmin::text AS tx"
        " FROM events WHERE org_id = $1 AND event_type = 'KeyRevoked' AND position > $2"
        " ORDER BY position",
        org,
        made[-1]["position"] + 1,
    )
    assert [r["key_id"] for r in rows] == [ids[0], ids[2]]
    assert rows[-1]["position"] == answer["position"]
    # One transaction: both rows carry the same transaction id.
    assert len({r["tx"] for r in rows}) == 1
    for row in rows:
        actor = json.loads(row["actor"])
        assert actor["request_id"] == "incident-42" and actor["on_behalf_of"] == "user:7"
        assert json.loads(row["data"])["reason"] == "compromised"
    # This replica refuses every one of them by the time the answer is back.
    for made_key in made:
        assert await verify(api, made_key["secret"]) == "REVOKED"


async def test_created_by_revokes_what_that_service_key_generated_in_that_org(
    client: TestClient, api: Api, pool: asyncpg.Pool, settings: Settings
) -> None:
    org, elsewhere = new_org(), new_org()
    leaked = await service_key(client, pool, settings, ["keys:write"])
    other = await service_key(client, pool, settings, ["keys:write"])
    as_leaked, as_other = Api(client, leaked.secret), Api(client, other.secret)
    by_leaked = [await as_leaked.generate(org, name=f"l{n}") for n in range(2)]
    by_other = await as_other.generate(org)
    abroad = await as_leaked.generate(elsewhere)

    status, answer = await revocations(
        api, org, {"reason": "compromised", "created_by": leaked.key_id}
    )

    assert status == 200, answer
    assert sorted(answer["revoked"]) == sorted(k["key"]["id"] for k in by_leaked)
    assert answer["already_terminal"] == []
    for made in by_leaked:
        assert await verify(api, made["secret"]) == "REVOKED"
    assert await verify(api, by_other["secret"]) == "VALID"
    assert await verify(api, abroad["secret"]) == "VALID"


async def test_all_within_an_environment_then_all(api: Api) -> None:
    org = new_org()
    live = await api.generate(org)
    tests = [await api.generate(org, environment="test") for _ in range(2)]

    status, answer = await revocations(
        api, org, {"reason": "rotated", "all": True, "environment": "test"}
    )
    assert status == 200, answer
    assert sorted(answer["revoked"]) == sorted(k["key"]["id"] for k in tests)
    assert await verify(api, live["secret"]) == "VALID"

    status, answer = await revocations(api, org, {"reason": "rotated", "all": True})
    assert (status, answer["revoked"]) == (200, [live["key"]["id"]])
    status, answer = await revocations(api, org, {"reason": "rotated", "all": True})
    assert (status, answer["revoked"], answer["already_terminal"]) == (200, [], [])
    # Nothing written: the position is the log head the answer was decided at.
    assert answer["position"] >= live["position"]


async def test_service_keys_are_revoked_by_id_never_all_at_once(
    api: Api, client: TestClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    verifier = await service_key(client, pool, settings, ["keys:verify"])
    for body in (
        {"reason": "other", "all": True},
        {"reason": "other", "all": True, "environment": "live"},
        {"reason": "other", "created_by": "test"},
    ):
        status, answer = await revocations(api, "_system", body)
        assert (status, answer["error"]["code"]) == (422, "validation_error"), answer
    status_of = "SELECT status FROM key_registry WHERE key_id = $1"
    assert await pool.fetchval(status_of, verifier.key_id) == "active"  # nothing revoked
    status, answer = await revocations(
        api, "_system", {"reason": "other", "key_ids": [verifier.key_id]}
    )
    assert (status, answer["revoked"]) == (200, [verifier.key_id])


async def test_an_idempotent_retry_replays_and_a_changed_body_is_refused(
    api: Api, pool: asyncpg.Pool
) -> None:
    org = new_org()
    made = [await api.generate(org) for _ in range(2)]
    body = {"reason": "leaked", "key_ids": [m["key"]["id"] for m in made]}
    retry = {"Idempotency-Key": f"bulk-{org}"}

    status, first = await revocations(api, org, body, headers=retry)
    assert status == 200 and len(first["revoked"]) == 2
    before = await head(pool)
    status, replay = await revocations(api, org, body, headers=retry)
    assert status == 200
    assert replay == {**first, "replayed": True}
    assert await head(pool) == before  # nothing written by the replay

    status, refused = await revocations(api, org, {**body, "reason": "other"}, headers=retry)
    assert (status, refused["error"]["code"]) == (422, "idempotency_key_reused")
    status, _, single = await api.post(
        f"/v1/orgs/{org}/keys/{made[0]['key']['id']}/revoke", {"reason": "leaked"}, headers=retry
    )
    assert (status, single["error"]["code"]) == (422, "idempotency_key_reused")


async def test_an_id_that_is_no_key_of_the_org_refuses_everything(
    api: Api, pool: asyncpg.Pool
) -> None:
    org, elsewhere = new_org(), new_org()
    mine = await api.generate(org)
    theirs = await api.generate(elsewhere)
    unknown = "key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"
    before = await head(pool)

    status, refused = await revocations(
        api, org, {"reason": "leaked", "key_ids": [mine["key"]["id"], theirs["key"]["id"], unknown]}
    )

    assert status == 404, refused
    assert refused["error"]["code"] == "key_not_found"
    assert refused["error"]["details"] == {"missing": [theirs["key"]["id"], unknown]}
    assert await head(pool) == before
    assert await verify(api, mine["secret"]) == "VALID"
    # A named key of the other environment is not one of the selection either.
    status, refused = await revocations(
        api, org, {"reason": "leaked", "key_ids": [mine["key"]["id"]], "environment": "test"}
    )
    assert (status, refused["error"]["details"]) == (404, {"missing": [mine["key"]["id"]]})


async def test_who_may_revoke(
    client: TestClient, api: Api, pool: asyncpg.Pool, settings: Settings
) -> None:
    org, elsewhere = new_org(), new_org()
    theirs = await api.generate(elsewhere)
    reader = Api(client, (await service_key(client, pool, settings, ["keys:read"])).secret)
    limited = Api(
        client, (await service_key(client, pool, settings, ["keys:write"], orgs=[org])).secret
    )
    body = {"reason": "leaked", "all": True}

    status, refused = await revocations(reader, org, body)
    assert (status, refused["error"]["code"]) == (403, "insufficient_scope")
    status, refused = await revocations(limited, elsewhere, body)
    assert (status, refused["error"]["code"]) == (404, "org_not_found")
    # Through its own org, another org's key is not found.
    status, refused = await revocations(
        limited, org, {"reason": "leaked", "key_ids": [theirs["key"]["id"]]}
    )
    assert (status, refused["error"]["code"]) == (404, "key_not_found")
    status, refused = await revocations(Api(client, "sk_live_nope"), org, body)
    assert status == 401
    assert await verify(api, theirs["secret"]) == "VALID"


async def test_a_key_whose_events_do_not_fold_is_named_and_the_rest_revoked(
    postgres_server_url: str, settings: Settings
) -> None:
    async with isolated_app(postgres_server_url, settings) as app:
        api = Api(app.client, app.admin_key)
        org = new_org()
        good = await api.generate(org)
        poisoned = await api.generate(org)
        async with app.pool.acquire() as conn:
            injected = await inject(
                conn,
                org,
                event_type="KeyRenamed",
                key_id=poisoned["key"]["id"],
                stream_version=2,
                data={"name": 42},
            )
        await indexed(app.client, injected.position)

        status, answer = await revocations(api, org, {"reason": "leaked", "all": True})

        assert status == 200, answer
        assert answer["revoked"] == [good["key"]["id"]]
        assert answer["quarantined"] == [poisoned["key"]["id"]]
        assert await verify(api, good["secret"]) == "REVOKED"
        assert await verify(api, poisoned["secret"]) != "VALID"


# -- hostile bodies ------------------------------------------------------------------

KEY_IDS = st.sampled_from(
    ["key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P", "key_", "KEY_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
BODIES = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "reason": st.sampled_from(["leaked", "compromised", "nope", ""]) | JSON_VALUES,
            "key_ids": st.lists(KEY_IDS | JSON_VALUES, max_size=4) | JSON_VALUES,
            "created_by": st.text(max_size=300) | JSON_VALUES,
            "all": st.sampled_from([True, False, 1, "true"]) | JSON_VALUES,
            "environment": st.sampled_from(["live", "test", "prod"]) | JSON_VALUES,
            "extra": JSON_VALUES,
        },
    ),
)
# What a bulk revocation may answer, whatever the body: never a 5xx.
ANSWERS = {
    200: None,
    400: {"malformed_json", "invalid_json"},
    404: {"key_not_found"},
    422: {"validation_error"},
}


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(body=BODIES)
@example(body={"reason": "leaked", "all": True, "created_by": "x"})
@example(body={"reason": "leaked", "key_ids": ["key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"] * 1001})
@example(body={"reason": "leaked", "all": 1})
@example(body={"reason": "leaked", "created_by": "a\nb"})
async def test_hostile_bodies_get_a_stable_4xx_and_revoke_nothing_they_should_not(
    api: Api, body: Any
) -> None:
    org = new_org()
    bystander = await api.generate(org)
    status, answer = await revocations(api, org, body)
    assert status in ANSWERS, answer
    if status != 200:
        assert answer["error"]["code"] in ANSWERS[status]
        assert await verify(api, bystander["secret"]) == "VALID"
        return
    # Accepted: exactly one selection; only "all" (or created_by the admin) may take the key.
    assert isinstance(body, dict)
    took = body.get("all") is True and body.get("environment") in (None, "live")
    assert (bystander["key"]["id"] in answer["revoked"]) == took
