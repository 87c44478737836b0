"""``Idempotency-Key`` on registering and removing webhook endpoints (docs/api.md).

A client that retries a registration after a timeout must get the endpoint it
registered, not a second one (which would be sent every event twice); a
remembered answer and the event it answers are written together or not at all.
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from service.http.context import KEYLEDGER
from tests.support.api import Api, new_org


async def _logged(pool: Any, org: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT event_type FROM events WHERE org_id = $1 ORDER BY position", org
    )
    return [row["event_type"] for row in rows]


async def test_a_retried_registration_answers_the_first_endpoint(
    api: Api, client: TestClient, pool: Any
) -> None:
    org = new_org()
    path = f"/v1/orgs/{org}/webhooks"
    body = {"url": "https://hooks.example.com/kl", "event_types": ["KeyRevoked"]}
    headers = {"Idempotency-Key": f"wh-{org}"}
    first = await api.post(path, body, headers=headers)
    # The same body, its fields in another order: the same request.
    again = await api.post(path, dict(reversed(body.items())), headers=headers)

    assert first[0] == again[0] == 201, (first, again)
    assert again[2]["webhook"] == first[2]["webhook"]
    # As for a generated key: the secret is shown once, never replayed (never stored clear).
    assert first[2]["secret"].startswith("whsec_") and "replayed" not in first[2]
    assert again[2]["secret"] is None and again[2]["replayed"] is True
    _, _, listing = await api.get(path)
    assert [w["id"] for w in listing["data"]] == [first[2]["webhook"]["id"]]
    assert await _logged(pool, org) == ["WebhookRegistered"]
    # The endpoint signs with the secret the first answer handed out.
    endpoints = client.app[KEYLEDGER].webhooks
    endpoint = await endpoints.get(org, first[2]["webhook"]["id"])
    assert endpoints.seal.open(endpoint.webhook_id, endpoint.sealed_secret) == first[2]["secret"]

    # The same key with another body, or on another command, is refused as key commands do.
    other = await api.post(path, {"url": "https://hooks.example.com/other"}, headers=headers)
    key_body = {"name": "k", "type": "secret"}
    as_key = await api.post(f"/v1/orgs/{org}/keys", key_body, headers=headers)
    for status, _, error in (other, as_key):
        assert (status, error["error"]["code"]) == (422, "idempotency_key_reused")
    assert await _logged(pool, org) == ["WebhookRegistered"]


async def test_a_retried_removal_answers_the_first_removal(
    api: Api, client: TestClient, pool: Any
) -> None:
    org = new_org()
    ids = []
    for n in range(2):
        _, _, created = await api.post(
            f"/v1/orgs/{org}/webhooks", {"url": f"https://a.example/{n}"}
        )
        ids.append(created["webhook"]["id"])
    headers = api.headers(**{"Idempotency-Key": f"rm-{org}"})
    first = await client.delete(f"/v1/orgs/{org}/webhooks/{ids[0]}", headers=headers)
    again = await client.delete(f"/v1/orgs/{org}/webhooks/{ids[0]}", headers=headers)
    first_body, again_body = await first.json(), await again.json()
    assert first.status == again.status == 200
    assert first_body["webhook"]["removed_at"] is not None and "replayed" not in first_body
    assert again_body == {**first_body, "replayed": True}

    # Another endpoint's removal under the same key is another request: refused, not done.
    other = await client.delete(f"/v1/orgs/{org}/webhooks/{ids[1]}", headers=headers)
    assert (other.status, (await other.json())["error"]["code"]) == (422, "idempotency_key_reused")
    assert await _logged(pool, org) == ["WebhookRegistered", "WebhookRegistered", "WebhookRemoved"]


async def test_an_answer_not_remembered_is_an_endpoint_not_registered(api: Api, pool: Any) -> None:
    """The database fails while remembering the answer, after the append: neither stays,
    so the retry with the same key registers the endpoint, once."""
    org = new_org()
    key = f"crash-{org}"
    trigger = f"forget_{org.replace('-', '_')}"
    # A real failure of PostgreSQL (as if it were shut down) at the INSERT of the answer.
    await pool.execute(
        f"""CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'shutting down' USING ERRCODE = 'admin_shutdown'; END $$;
            CREATE TRIGGER {trigger} BEFORE INSERT ON idempotency_keys FOR EACH ROW
            WHEN (NEW.idempotency_key = '{key}') EXECUTE FUNCTION {trigger}()"""
    )
    path = f"/v1/orgs/{org}/webhooks"
    body = {"url": "https://hooks.example.com/kl"}
    try:
        status, _, failed = await api.post(path, body, headers={"Idempotency-Key": key})
    finally:
        await pool.execute(f"DROP TRIGGER {trigger} ON idempotency_keys; DROP FUNCTION {trigger}()")
    assert (status, failed["error"]["code"]) == (503, "unavailable")
    assert await _logged(pool, org) == []
    assert await pool.fetchval("SELECT count(*) FROM webhook_endpoints WHERE org_id = $1", org) == 0

    status, _, created = await api.post(path, body, headers={"Idempotency-Key": key})
    assert status == 201 and created["secret"] and "replayed" not in created
    assert await _logged(pool, org) == ["WebhookRegistered"]
