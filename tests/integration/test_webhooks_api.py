"""The webhook endpoints API: registration, listing, removal; bad input of every kind.

Runs on the session app (no NATS, so nothing is delivered): what is checked
here is what the API accepts, stores and shows.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import hostile
from tests.support.api import Api, new_org

THROUGH_THE_API = settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


async def test_register_shows_the_secret_once_and_never_again(api: Api) -> None:
    org = new_org()
    status, _, created = await api.post(
        f"/v1/orgs/{org}/webhooks",
        {"url": "https://hooks.example.com/keyledger", "event_types": ["KeyRevoked"]},
        headers={"X-On-Behalf-Of": "user:7"},
    )
    assert status == 201, created
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    webhook = created["webhook"]
    assert webhook["event_types"] == ["KeyRevoked"]
    assert webhook["created_by"]["on_behalf_of"] == "user:7"

    status, _, listing = await api.get(f"/v1/orgs/{org}/webhooks")
    assert status == 200 and [w["id"] for w in listing["data"]] == [webhook["id"]]
    status, _, one = await api.get(f"/v1/orgs/{org}/webhooks/{webhook['id']}")
    assert status == 200 and one["webhook"] == webhook
    status, _, deliveries = await api.get(f"/v1/orgs/{org}/webhooks/{webhook['id']}/deliveries")
    assert status == 200 and deliveries == {"data": [], "next_before": None}
    assert secret not in json.dumps([listing, one, deliveries])


async def test_the_stored_secret_is_sealed(api: Api, pool: Any) -> None:
    org = new_org()
    _, _, created = await api.post(f"/v1/orgs/{org}/webhooks", {"url": "https://a.example/h"})
    sealed = await pool.fetchval(
        "SELECT sealed_secret FROM webhook_secrets WHERE webhook_id = $1",
        created["webhook"]["id"],
    )
    assert created["secret"].encode() not in bytes(sealed)
    # Nor is it, sealed or not, in the log.
    logged = await pool.fetch(
        "SELECT data::text FROM events WHERE key_id = $1", created["webhook"]["id"]
    )
    assert len(logged) == 1 and "whsec_" not in logged[0]["data"]
    assert bytes(sealed).hex() not in logged[0]["data"]


async def test_remove_records_who_and_is_idempotent(api: Api, client: TestClient) -> None:
    org = new_org()
    _, _, created = await api.post(f"/v1/orgs/{org}/webhooks", {"url": "https://a.example/h"})
    path = f"/v1/orgs/{org}/webhooks/{created['webhook']['id']}"
    first = await client.delete(path, headers=api.headers(**{"X-On-Behalf-Of": "user:9"}))
    body = await first.json()
    assert first.status == 200 and body["webhook"]["removed_by"]["on_behalf_of"] == "user:9"
    again = await client.delete(path, headers=api.headers())
    assert again.status == 200 and (await again.json()) == body
    _, _, listing = await api.get(f"/v1/orgs/{org}/webhooks")
    assert listing["data"] == []


async def test_unknown_and_other_orgs_webhooks_are_not_found(
    api: Api, client: TestClient, pool: Any
) -> None:
    org, other = new_org(), new_org()
    _, _, created = await api.post(f"/v1/orgs/{org}/webhooks", {"url": "https://a.example/h"})
    webhook_id = created["webhook"]["id"]
    for path in (
        f"/v1/orgs/{other}/webhooks/{webhook_id}",
        f"/v1/orgs/{org}/webhooks/wh_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P",
        f"/v1/orgs/{org}/webhooks/not-an-id",
        f"/v1/orgs/{org}/webhooks/{webhook_id}x/deliveries",
    ):
        status, _, body = await api.get(path)
        assert (status, body["error"]["code"]) == (404, "webhook_not_found"), path
    for path in (
        f"/v1/orgs/{other}/webhooks/{webhook_id}",
        f"/v1/orgs/{org}/webhooks/wh_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P",
    ):
        response = await client.delete(path, headers=api.headers())
        assert response.status == 404
    # Nothing was logged for them: only the registration is in the log.
    logged = await pool.fetch(
        "SELECT org_id, event_type FROM events WHERE org_id = ANY($1::text[])", [org, other]
    )
    assert [(r["org_id"], r["event_type"]) for r in logged] == [(org, "WebhookRegistered")]


REFUSED_URLS = [
    "file:///etc/passwd",
    "gopher://example.com/",
    "ftp://example.com/",
    "javascript:alert(1)",
    "https://",
    "https://user:password@example.com/",
    "http://127.0.0.1:8080/",
    "http://localhost/",
    "http://api.localhost/",
    "http://10.0.0.8/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://[fd00::1]/",
    "http://0.0.0.0/",
    # Multicast, and loopback through NAT64, 6to4, and inet_aton's shorthands.
    "http://224.0.0.1/x",
    "http://[64:ff9b::7f00:1]/x",
    "http://[2002:7f00:1::]/x",
    "http://127.1",
    "http://2130706433",
    "http://0x7f000001",
    "http://0177.0.0.1",
    "https://example.com:99999/",
    "https://example.com/#frag",
    "https://exa mple.com/",
    "https://example.com/\u00e9",
    "https://example.com/" + "a" * 2100,
]


async def test_urls_keyledger_will_not_call_are_refused(api: Api) -> None:
    org = new_org()
    for url in REFUSED_URLS:
        status, _, body = await api.post(f"/v1/orgs/{org}/webhooks", {"url": url})
        assert status == 422, (url, body)
        assert body["error"]["code"] in ("invalid_webhook_url", "validation_error"), url
    _, _, listing = await api.get(f"/v1/orgs/{org}/webhooks")
    assert listing["data"] == []


async def test_bodies_are_strict(api: Api) -> None:
    org = new_org()
    for body in (
        {"url": "https://a.example/h", "events": ["KeyRevoked"]},
        {"url": "https://a.example/h", "event_types": ["KeyMelted"]},
        {"url": "https://a.example/h", "event_types": "KeyRevoked"},
        {"url": ["https://a.example/h"]},
        {"url": "https://a.example/h", "event_types": ["KeyRevoked"] * 33},
        {},
        [],
        "https://a.example/h",
    ):
        status, _, answer = await api.post(f"/v1/orgs/{org}/webhooks", body)
        assert status == 422, (body, answer)


async def test_scopes_are_required(client: TestClient, api: Api) -> None:
    org = new_org()
    response = await client.post(f"/v1/orgs/{org}/webhooks", json={"url": "https://a.example/"})
    assert response.status == 401
    _, _, reader = await api.post(
        "/v1/orgs/_system/keys", {"name": "reader", "type": "secret", "scopes": ["keys:read"]}
    )
    weak = {"Authorization": f"Bearer {reader['secret']}"}
    response = await client.post(
        f"/v1/orgs/{org}/webhooks", json={"url": "https://a.example/"}, headers=weak
    )
    assert response.status in (401, 403)  # 401 while the new key is not yet indexed
    response = await client.get(
        f"/v1/orgs/{org}/webhooks/wh_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P/deliveries?limit=0",
        headers=api.headers(),
    )
    assert response.status in (404, 422)


async def test_deliveries_query_is_checked(api: Api) -> None:
    org = new_org()
    _, _, created = await api.post(f"/v1/orgs/{org}/webhooks", {"url": "https://a.example/h"})
    path = f"/v1/orgs/{org}/webhooks/{created['webhook']['id']}/deliveries"
    queries = ("?limit=0", "?limit=501", "?limit=x", "?before=-1", "?cursor=1", "?limit=1&limit=2")
    for query in queries:
        status, _, body = await api.get(path + query)
        assert status == 422, (query, body)


@THROUGH_THE_API
@given(
    body=st.one_of(
        hostile.json_values,
        st.fixed_dictionaries(
            {"url": hostile.texts},
            optional={"event_types": st.lists(hostile.texts, max_size=3)},
        ),
        st.fixed_dictionaries(
            {"url": st.just("https://a.example/"), "event_types": hostile.json_values}
        ),
    )
)
async def test_hostile_webhook_bodies_get_a_clear_answer(
    api: Api, client: TestClient, body: Any
) -> None:
    org = new_org()
    response = await client.post(f"/v1/orgs/{org}/webhooks", json=body, headers=api.headers())
    answer = await response.json()
    assert response.status in (201, 400, 422), (response.status, answer)
    if response.status != 201:
        assert "error" in answer and answer["error"]["code"]
        return
    assert answer["secret"].startswith("whsec_")


async def test_refusals_say_what_is_wrong(api: Api) -> None:
    org = new_org()
    expected = {
        "https://bücher.example/h": ("invalid_webhook_url", "punycode"),
        "https://a.example/a b": ("invalid_webhook_url", "percent-encode"),
        "https://1.2.3.999/h": ("invalid_webhook_url", "no IPv4 address"),
    }
    for url, (code, words) in expected.items():
        _, _, body = await api.post(f"/v1/orgs/{org}/webhooks", {"url": url})
        assert body["error"]["code"] == code and words in body["error"]["message"], body
    for event_type, words in (
        ("WebhookRegistered", "events about webhook endpoints are not sent"),
        ("KeyMelted", "is not an event type"),
    ):
        status, _, body = await api.post(
            f"/v1/orgs/{org}/webhooks",
            {"url": "https://a.example/h", "event_types": ["KeyRevoked", event_type]},
        )
        assert (status, body["error"]["code"]) == (422, "unknown_event_type"), body
        assert body["error"]["message"].startswith("event_types[1] "), body
        assert words in body["error"]["message"], body
    _, _, created = await api.post(f"/v1/orgs/{org}/webhooks", {"url": "https://a.example/h"})
    status, _, body = await api.get(
        f"/v1/orgs/{org}/webhooks/{created['webhook']['id']}/deliveries?before=abc"
    )
    assert status == 422 and "delivery attempt id" in json.dumps(body), body


async def test_registration_and_removal_answer_their_events_positions(
    api: Api, client: TestClient, pool: Any
) -> None:
    """As every command does: a min_position for the reads that should see the change."""
    org = new_org()
    _, _, created = await api.post(f"/v1/orgs/{org}/webhooks", {"url": "https://a.example/h"})
    webhook_id = created["webhook"]["id"]
    path = f"/v1/orgs/{org}/webhooks/{webhook_id}"
    removed = await (await client.delete(path, headers=api.headers())).json()
    again = await (await client.delete(path, headers=api.headers())).json()
    logged = await pool.fetch(
        "SELECT event_type, position FROM events WHERE key_id = $1 ORDER BY position", webhook_id
    )
    assert [(row["event_type"], row["position"]) for row in logged] == [
        ("WebhookRegistered", created["position"]),
        ("WebhookRemoved", removed["position"]),
    ]
    assert again["position"] == removed["position"]  # nothing new written
    status, _, events = await api.get(f"/v1/audit?org_id={org}&min_position={removed['position']}")
    assert status == 200 and [e["event_type"] for e in events["data"]][-1] == "WebhookRemoved"
