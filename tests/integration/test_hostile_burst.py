"""One burst of hostile and normal traffic against one app (issue 9, "Done when").

A single shuffled ``asyncio.gather`` mixes ~40 ordinary commands of many
orgs with ~40 poison requests covering every class of issue 9, while poison
events are written straight into the log behind the API's back. Afterwards:

- every normal command answered 2xx and its events are in the log;
- every poison request got a 4xx with its stable code, never a 5xx;
- no answer and no log line repeats a secret that was sent;
- the log is dense and its hash chain verifies;
- the read model shows every normal key in its final state;
- the relay published every normal event to JetStream exactly once,
  including a revocation made after the poison;
- the poison keys are quarantined and named in ``/readyz``, which answered
  200 (ready or degraded) every time it was asked during the burst;
- verify answers each normal key's expected code, NOT_FOUND for a key the
  index set aside.

Waits are bounded waits for conditions; nothing is timed.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections import Counter
from typing import Any

from events.models import Actor
from service.domain import key_material
from service.http.context import KEYLEDGER
from service.service_keys import issue_service_key
from service.settings import Settings
from tests.support.api import Api, indexed, new_org
from tests.support.burst import Burst, injection, normal, poison, sample_readiness
from tests.support.outbox import (
    eventually,
    stream_messages,
)
from tests.support.poison import (
    IsolatedApp,
    generated_data,
    isolated_app_with_relay,
    nested,
)

# Secrets sent where they do not belong; none may come back or reach a log line.
SENT_SECRET = "sk_live_" + "B3rstS3cretN0tEch0ed" * 2
RANDOM_BEARER = key_material.new_secret("secret", "live")
ORIGIN = "https://app.example"
KEY_ID = "key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"


async def _prepare(app: IsolatedApp, settings: Settings) -> Burst:
    api = Api(app.client, app.admin_key)
    limited_org = new_org()
    issued = await issue_service_key(
        app.pool,
        settings.pepper_bytes,
        name="org-limited admin",
        scopes=["admin"],
        orgs=[limited_org],
        actor=Actor(id="test:burst"),
    )
    await indexed(app.client, issued.position)
    burst = Burst(app, api, Api(app.client, issued.secret), [new_org() for _ in range(6)])
    # Keys made before the burst, to be renamed, disabled, enabled, rotated or revoked.
    for n, org in enumerate(burst.orgs):
        for verb in ("rename", "disable", "enable", "rotate", "revoke"):
            made = await api.generate(org, name=f"{verb} me {n}")
            key_id = made["key"]["id"]
            burst.secrets[key_id] = made["secret"]
            burst.expected[key_id] = (org, "active", f"{verb} me {n}")
            if verb == "enable":
                status, _, _ = await api.post(f"/v1/orgs/{org}/keys/{key_id}/disable", {})
                assert status == 200
                burst.expected[key_id] = (org, "disabled", f"{verb} me {n}")
    victim = await api.generate(burst.orgs[0], name="victim")
    burst.victim = victim["key"]["id"]
    burst.secrets[burst.victim] = victim["secret"]
    burst.known_secret = key_material.new_secret("secret", "live")
    return burst


def _normal_commands(burst: Burst) -> None:
    """~40 ordinary commands: GenerateKey of each type, and each command on earlier keys."""
    bodies: list[dict[str, Any]] = [
        {"type": "secret", "metadata": {"team": "a", "depth": {"ok": [1, 2]}}},
        {"type": "embed", "allowed_origins": [ORIGIN], "resource": "res-1"},
        {"type": "signing", "algorithm": "ed25519"},
        {"type": "signing", "algorithm": "rsa-2048"},
    ]
    for n, org in enumerate(burst.orgs):
        for body in bodies[: 2 if n % 2 else 4]:
            name = f"made in the burst {n} {body['type']}"

            def made(answer: dict[str, Any], org: str = org, name: str = name) -> None:
                key_id = answer["key"]["id"]
                burst.expected[key_id] = (org, "active", name)
                if answer.get("secret"):
                    burst.secrets[key_id] = answer["secret"]
                if answer["key"]["type"] == "embed":
                    burst.embed.add(key_id)

            normal(burst, f"generate {body['type']}", "POST", f"/v1/orgs/{org}/keys",
                    {"name": name, **body}, made)  # fmt: skip
    for key_id, (org, _, name) in list(burst.expected.items()):
        verb = name.split()[0]
        path = f"/v1/orgs/{org}/keys/{key_id}/{verb}"
        final = {
            "rename": ("active", f"renamed {name}"),
            "disable": ("disabled", name),
            "enable": ("active", name),
            "rotate": ("active", name),
            "revoke": ("revoked", name),
        }[verb]
        body = {
            "rename": {"name": f"renamed {name}"},
            "disable": {"reason": "burst"},
            "enable": {},
            "rotate": {"grace_period": "0s"},
            "revoke": {"reason": "unused"},
        }[verb]
        if verb == "revoke" and org == burst.orgs[-1]:
            continue  # revoked after the poison, once the burst is over

        def done(answer: dict[str, Any], key_id: str = key_id, final: Any = final) -> None:
            burst.expected[key_id] = (burst.expected[key_id][0], *final)
            if answer.get("secret"):
                burst.secrets[key_id] = answer["secret"]

        normal(burst, verb, "POST", path, body, done)


def _poison_requests(burst: Burst) -> None:
    """~40 hostile requests, every class of issue 9, each with its stable answer."""
    org = burst.orgs[1]
    keys = f"/v1/orgs/{org}/keys"
    target = next(k for k, v in burst.expected.items() if v[0] == org)
    invalid = (422, "validation_error")
    for label, text in (("NUL", "a\x00b"), ("ESC", "esc\x1b[2J"), ("DEL", "d\x7f")):
        poison(burst, f"{label} in name", invalid, "POST", keys,
                body={"name": text, "type": "secret"})  # fmt: skip
        poison(burst, f"{label} in resource", invalid, "POST", keys,
                body={"name": "e", "type": "embed", "resource": text,
                      "allowed_origins": [ORIGIN]})  # fmt: skip
        poison(burst, f"{label} in a reason", invalid, "POST", f"{keys}/{target}/disable",
                body={"reason": text})  # fmt: skip
        poison(burst, f"{label} in a metadata key", invalid, "POST", keys,
                body={"name": "m", "type": "secret", "metadata": {text: 1}})  # fmt: skip
    poison(burst, "NUL in a metadata value", invalid, "POST", keys,
            body={"name": "m", "type": "secret", "metadata": {"k": ["\x00"]}})  # fmt: skip
    for label, raw in (
        ("lone surrogate in name", b'{"name": "a\\ud800", "type": "secret"}'),
        ("lone surrogate in a reason", b'{"reason": "\\udfff"}'),
        ("lone surrogate in a metadata key", b'{"name": "m", "type": "secret", '
         b'"metadata": {"\\ud800": 1}}'),
        ("lone surrogate in a metadata value", b'{"name": "m", "type": "secret", '
         b'"metadata": {"a": [["\\udcff"]]}}'),
    ):  # fmt: skip
        path = f"{keys}/{target}/disable" if "reason" in label else keys
        poison(burst, label, invalid, "POST", path, raw=raw)
    for depth in (9, 250):
        poison(burst, f"metadata {depth} deep", invalid, "POST", keys,
                body={"name": "deep", "type": "secret", "metadata": nested(depth)})  # fmt: skip
    for label, bad_org in (
        ("org with a newline", "nl%0A"),
        ("org with NUL", "a%00"),
        ("uppercase org", "ACME"),
        ("org of 64 characters", "a" * 64),
    ):
        poison(burst, label, (422, "validation_error"), "POST", f"/v1/orgs/{bad_org}/keys",
                body={"name": "n", "type": "secret"})  # fmt: skip
        poison(burst, f"list of {label}", (422, "validation_error"), "GET",
                f"/v1/orgs/{bad_org}/keys")  # fmt: skip
    for label, raw in (
        ("JSON 10k deep (arrays)", b"[" * 10_000 + b"]" * 10_000),
        ("JSON 10k deep (objects)", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
    ):
        poison(burst, label, (400, "invalid_json"), "POST", keys, raw=raw)
    poison(burst, "a body that is not UTF-8", (400, "malformed_json"), "POST", keys,
            raw=b'{"name": "\xff", "type": "secret"}')  # fmt: skip
    for label, credential in (("0xFF", b"\xff"), ("0x80", b"\x80abc"), ("UTF-8", b"\xc3\xbf")):
        poison(burst, f"non-ASCII Authorization ({label})", (401, "invalid_api_key"),
                "GET", keys, headers=[b"Authorization: Bearer " + credential])  # fmt: skip
    poison(burst, "a random well-formed secret", (401, "invalid_api_key"), "GET", keys,
            headers=[f"Authorization: Bearer {RANDOM_BEARER}".encode()])  # fmt: skip
    for label, query in (
        ("limit=²", "limit=%C2%B2"),
        ("limit in Arabic digits", "limit=%D9%A1"),
        ("limit with a newline", "limit=1%0A"),
    ):
        poison(burst, label, (422, "invalid_limit"), "GET", f"{keys}?{query}")
    for label, query in (
        ("since at the dawn of time, +14:00", "since=0001-01-01T00:00:00%2B14:00"),
        ("until past 9999", "until=10000-01-01T00:00:00Z"),
    ):
        poison(burst, label, (422, "invalid_timestamp"), "GET", f"/v1/audit?{query}")
    # An org-limited admin key acting on _system (authority never grows).
    poison(burst, "limited admin mints a global admin", (404, "org_not_found"), "POST",
            "/v1/orgs/_system/keys", body={"name": "escalate", "type": "secret",
                                          "scopes": ["admin"]},
            api=burst.limited)  # fmt: skip
    poison(burst, "limited admin lists _system", (404, "org_not_found"), "GET",
            "/v1/orgs/_system/keys", api=burst.limited)  # fmt: skip
    poison(burst, "limited admin audits _system", (404, "org_not_found"), "GET",
            "/v1/audit?org_id=_system", api=burst.limited)  # fmt: skip
    # Secrets where they do not belong: refused, never repeated.
    poison(burst, "a secret as an unknown query parameter", invalid, "GET",
            f"{keys}?{SENT_SECRET}=1")  # fmt: skip
    poison(burst, "a secret as an unknown parameter's value", invalid, "GET",
            f"{keys}?token={SENT_SECRET}")  # fmt: skip
    poison(burst, "a secret as an unknown body field", invalid, "POST", keys,
            body={"name": "n", "type": "secret", SENT_SECRET: 1})  # fmt: skip
    poison(burst, "a key id with a newline", (404, "key_not_found"), "GET",
            f"{keys}/{KEY_ID}%0A")  # fmt: skip


def _injections(burst: Burst, settings: Settings) -> None:
    """Poison events behind the API's back, during the burst."""
    org = burst.orgs[2]
    injection(burst, "NUL in a name", org, data=generated_data(name="a\x00b"))
    injection(burst, "org id with a newline", "nl\n")
    injection(burst, "undecodable data", org, data="[1, 2]")
    secret_hash = key_material.secret_hash(settings.pepper_bytes, burst.known_secret)
    injection(burst, "a known secret, metadata not an object", org,
               data=generated_data(secret_hash=secret_hash, metadata=[1]))  # fmt: skip
    injection(burst, "a later event of the victim that does not decode", burst.orgs[0],
               key_id=burst.victim, stream_version=2, event_type="KeyDisabled",
               data={"reason": {"not": "a string"}})  # fmt: skip


async def _verify(api: Api, secret: str, **extra: str) -> str:
    status, _, verdict = await api.post("/v1/verify", {"key": secret, **extra})
    assert status == 200, verdict
    return verdict["code"]


async def test_a_hostile_burst_fails_no_neighbour_and_halts_nothing(
    postgres_server_url: str, settings: Settings, nats_url: str, captured_logs: io.StringIO
) -> None:
    logs_before = len(captured_logs.getvalue())
    async with isolated_app_with_relay(postgres_server_url, settings, nats_url) as (
        app,
        js,
        stream,
    ):
        burst = await _prepare(app, settings)
        _normal_commands(burst)
        _poison_requests(burst)
        _injections(burst, settings)
        random.Random(9).shuffle(burst.calls)

        stop, readiness = asyncio.Event(), []
        sampler = asyncio.create_task(sample_readiness(app, stop, readiness))
        await asyncio.gather(*(call() for call in burst.calls))
        # A revocation made after the poison events still reaches everyone.
        late_org = burst.orgs[-1]
        late = next(
            k for k, v in burst.expected.items() if v[0] == late_org and v[2].startswith("revoke")
        )
        status, _, answer = await burst.api.post(
            f"/v1/orgs/{late_org}/keys/{late}/revoke", {"reason": "compromised"}
        )
        assert status == 200, answer
        burst.expected[late] = (late_org, "revoked", burst.expected[late][2])
        normal_positions = {answer["position"]: late}
        # Commands on the victim, whose stream no longer folds, are refused and write nothing.
        status, _, refused = await burst.api.post(
            f"/v1/orgs/{burst.orgs[0]}/keys/{burst.victim}/revoke", {"reason": "leaked"}
        )
        assert (status, refused["error"]["code"]) == (409, "key_quarantined")

        head = await app.pool.fetchval("SELECT max(position) FROM events")
        assert await app.client.app[KEYLEDGER].projections.wait_for("key_views", head, within=20)
        assert await app.client.app[KEYLEDGER].verifier.feed.wait_for(head, within=20)
        relay = app.client.app[KEYLEDGER].relay

        async def relayed() -> bool:
            return relay.published_position >= head

        await eventually(relayed, what="the relay to pass the head")
        stop.set()
        await sampler

        normal = [s for s in burst.sent if s.normal]
        poison = [s for s in burst.sent if not s.normal]
        assert len(normal) >= 40 and len(poison) >= 40, (len(normal), len(poison))
        # Every normal command committed; every poison request got its stable 4xx.
        for sent in normal:
            assert 200 <= sent.status < 300, (sent.label, sent.status, sent.body[:300])
            normal_positions[sent.json()["position"]] = sent.json()["key"]["id"]
        wrong = [
            (sent.label, sent.status, json.loads(sent.body or b"{}").get("error", {}).get("code"))
            for sent in poison
            if (sent.status, json.loads(sent.body or b"{}").get("error", {}).get("code"))
            != sent.expected
        ]
        assert not wrong, wrong

        # No secret that was sent comes back, in any answer or any log line.
        sent_secrets = [SENT_SECRET, RANDOM_BEARER, app.admin_key, burst.limited.service_key]
        logged = captured_logs.getvalue()[logs_before:]
        for secret in sent_secrets:
            assert all(secret.encode() not in s.body for s in burst.sent), secret[:12]
            assert secret not in logged, secret[:12]

        # The log is dense and its chain verifies.
        count = await app.pool.fetchval("SELECT count(*) FROM events")
        assert count == head
        status, _, report = await burst.api.get("/v1/audit/verify")
        assert status == 200 and report["ok"] is True, report
        rows = await app.pool.fetch(
            "SELECT position, key_id, event_id FROM events WHERE position = ANY($1::bigint[])",
            sorted(normal_positions),
        )
        assert {row["position"]: row["key_id"] for row in rows} == normal_positions

        # The read model: every normal key in its final state.
        for org in {org for org, _, _ in burst.expected.values()}:
            status, _, page = await burst.api.get(f"/v1/orgs/{org}/keys?limit=100")
            assert status == 200
            listed = {key["id"]: (key["status"], key["name"]) for key in page["data"]}
            for key_id, (key_org, final, name) in burst.expected.items():
                if key_org == org:
                    assert listed.get(key_id) == (final, name), (key_id, listed.get(key_id))

        # JetStream: every normal event exactly once (by position and by event id).
        published = [json.loads(m.data) for m in await stream_messages(js, stream.nats_stream)]
        by_position = Counter(e["position"] for e in published)
        by_event_id = Counter(e["event_id"] for e in published)
        assert max(by_position.values()) == 1 and max(by_event_id.values()) == 1
        for row in rows:
            assert by_position[row["position"]] == 1, row["position"]
            assert by_event_id[str(row["event_id"])] == 1
        assert any(e["key_id"] == late and e["event_type"] == "KeyRevoked" for e in published)

        # The poison keys are set aside and named; readiness never drained the replica.
        response = await app.client.get("/readyz")
        body = await response.json()
        assert response.status == 200 and body["status"] == "degraded", body
        named = {entry["key_id"] for entry in body["quarantined"]}
        assert {p.key_id for p in burst.injected.values()} <= named, body
        assert readiness and all(
            status == 200 and state in ("ready", "degraded") for status, state in readiness
        ), Counter(readiness)

        # Verify: each normal key's expected verdict; a key the index set aside fails closed.
        verdicts = {"active": "VALID", "disabled": "DISABLED", "revoked": "REVOKED"}
        for key_id, secret in burst.secrets.items():
            if key_id == burst.victim:
                continue
            extra = {"origin": ORIGIN, "resource": "res-1"} if key_id in burst.embed else {}
            code = await _verify(burst.api, secret, **extra)
            assert code == verdicts[burst.expected[key_id][1]], (key_id, burst.expected[key_id])
        assert await _verify(burst.api, burst.secrets[burst.victim]) == "NOT_FOUND"
        assert await _verify(burst.api, burst.known_secret) == "NOT_FOUND"
