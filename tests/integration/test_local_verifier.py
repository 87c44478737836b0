"""LocalVerifier against a real server, PostgreSQL and NATS: cache, eviction, distrust, usage."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from nats.js import JetStreamContext

from keyledger_client import KeyledgerClient, LocalVerifier
from keyledger_client.events import nats_servers
from service.embedded import free_port
from service.http.context import KEYLEDGER
from service.settings import Settings
from tests.integration.test_client_api import QUICK, base_url
from tests.support.api import new_org
from tests.support.outbox import eventually
from tests.support.poison import IsolatedApp, isolated_app_with_relay
from tests.support.tcp_proxy import tcp_proxy


class Counting(httpx.AsyncBaseTransport):
    """The real transport, counting requests by path: which verdicts came from the server."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.paths: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths[request.url.path] += 1
        return await self.inner.handle_async_request(request)


@dataclass
class Setup:
    app: IsolatedApp
    js: JetStreamContext
    stream: Settings
    kl: KeyledgerClient
    counting: Counting
    nats_url: str

    def verifier(self, nats_url: str | None = None, **options: object) -> LocalVerifier:
        return LocalVerifier(
            self.kl,
            nats_url or self.nats_url,
            stream=self.stream.nats_stream,
            subject_prefix=self.stream.nats_subject_prefix,
            **options,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
async def setup(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> AsyncIterator[Setup]:
    async with isolated_app_with_relay(postgres_server_url, settings, nats_url) as (app, js, st):
        counting = Counting()
        http = httpx.AsyncClient(transport=counting)
        async with KeyledgerClient(
            base_url(app.client), app.admin_key, retry=QUICK, http=http
        ) as kl:
            yield Setup(app, js, st, kl, counting, nats_servers(nats_url)[0])


async def remote_verifies(setup: Setup, verifier: LocalVerifier, secret: str, **req: object) -> int:
    """How many /v1/verify calls one local verify made (0: answered from the cache)."""
    before = setup.counting.paths["/v1/verify"]
    await verifier.verify(secret, **req)  # type: ignore[arg-type]
    return setup.counting.paths["/v1/verify"] - before


async def test_a_revocation_evicts_before_the_next_verify(setup: Setup) -> None:
    org = new_org()
    made = await setup.kl.generate_key(org, name="cached", type="secret", scopes=["a:read"])
    other = await setup.kl.generate_key(org, name="bystander", type="secret")
    assert made.secret and other.secret
    async with setup.verifier() as verifier:
        first = await verifier.verify(made.secret, scopes=["a:read"])
        assert (first.valid, first.code) == (True, "VALID")
        assert await remote_verifies(setup, verifier, made.secret, scopes=["a:read"]) == 0
        again = await verifier.verify(made.secret, scopes=["a:read"])
        assert again == first  # the same result type and content as the client's verify
        # Other requirements are another verdict, asked of the server.
        assert await remote_verifies(setup, verifier, made.secret, scopes=["b:read"]) == 1
        await verifier.verify(other.secret)

        revoked = await setup.kl.revoke_key(org, made.key.id, "compromised")
        assert await verifier.wait_for_position(revoked.position)
        # Delivered: the very next verify is refused, by the server, not the cache.
        assert await remote_verifies(setup, verifier, made.secret, scopes=["a:read"]) == 1
        refused = await verifier.verify(made.secret, scopes=["a:read"])
        assert (refused.valid, refused.code) == (False, "REVOKED")
        # Another key's verdict stays cached.
        assert await remote_verifies(setup, verifier, other.secret) == 0


async def test_any_event_of_a_key_evicts_it(setup: Setup) -> None:
    org = new_org()
    made = await setup.kl.generate_key(org, name="renamed", type="secret")
    assert made.secret
    async with setup.verifier() as verifier:
        await verifier.verify(made.secret)
        renamed = await setup.kl.rename_key(org, made.key.id, "new name")
        assert await verifier.wait_for_position(renamed.position)
        assert await remote_verifies(setup, verifier, made.secret) == 1
        result = await verifier.verify(made.secret)
        assert result.key is not None and result.key.name == "new name"


async def test_keys_with_a_rate_limit_are_always_checked_remotely(setup: Setup) -> None:
    made = await setup.kl.generate_key(
        new_org(), name="limited", type="secret", rate_limit={"limit": 100, "window": "1m"}
    )
    assert made.secret
    async with setup.verifier() as verifier:
        assert await remote_verifies(setup, verifier, made.secret) == 1
        assert await remote_verifies(setup, verifier, made.secret) == 1
        assert len(verifier.cache) == 0


async def test_an_ip_allowlist_is_checked_per_address_and_a_cost_asks_keyledger(
    setup: Setup,
) -> None:
    made = await setup.kl.generate_key(
        new_org(), name="walled", type="secret", allowed_cidrs=["10.0.0.0/8"]
    )
    assert made.secret
    async with setup.verifier() as verifier:
        inside = await verifier.verify(made.secret, ip="10.1.2.3")
        assert inside.code == "VALID"
        assert await remote_verifies(setup, verifier, made.secret, ip="10.1.2.3") == 0
        outside = await verifier.verify(made.secret, ip="192.168.0.1")
        assert outside.code == "IP_NOT_ALLOWED"  # another address: another verdict
        assert await remote_verifies(setup, verifier, made.secret, ip="192.168.0.1") == 1
        # Any other cost than 1 is keyledger's to count, and the cache stays as it was.
        assert await remote_verifies(setup, verifier, made.secret, ip="10.1.2.3", cost=0) == 1
        assert await remote_verifies(setup, verifier, made.secret, ip="10.1.2.3") == 0


async def test_refusals_are_not_cached(setup: Setup) -> None:
    async with setup.verifier() as verifier:
        assert await remote_verifies(setup, verifier, "sk_live_nope") == 1
        assert await remote_verifies(setup, verifier, "sk_live_nope") == 1


async def test_cache_hits_are_reported_as_usage(setup: Setup) -> None:
    org = new_org()
    made = await setup.kl.generate_key(org, name="used", type="secret")
    assert made.secret
    async with setup.verifier() as verifier:
        await verifier.verify(made.secret)
        assert await remote_verifies(setup, verifier, made.secret) == 0
        assert await verifier.flush_usage() == 1
    await setup.app.client.app[KEYLEDGER].usage.flush()
    assert (await setup.kl.get_key(org, made.key.id)).last_used_at is not None


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition()``: a bound for a hung test, not a timed assertion."""

    async def holds() -> bool:
        return condition()

    await eventually(holds, within=30.0)


async def test_nats_down_stops_answering_from_the_cache(setup: Setup) -> None:
    made = await setup.kl.generate_key(new_org(), name="cut", type="secret")
    assert made.secret
    async with tcp_proxy(setup.nats_url) as proxy, setup.verifier(proxy.url) as verifier:
        await verifier.verify(made.secret)
        assert await remote_verifies(setup, verifier, made.secret) == 0

        await proxy.cut()
        await until(lambda: not verifier.trusted)
        # NATS is gone: every verify asks the server, and nothing is cached meanwhile.
        assert await remote_verifies(setup, verifier, made.secret) == 1
        assert await remote_verifies(setup, verifier, made.secret) == 1
        assert len(verifier.cache) == 0

        await proxy.restore()
        await until(lambda: verifier.trusted)
        await verifier.verify(made.secret)
        assert await remote_verifies(setup, verifier, made.secret) == 0


async def test_a_silent_consumer_stops_the_cache_until_it_is_replaced(setup: Setup) -> None:
    """Connected, but the consumer is gone (no heartbeats): silence alone is enough."""
    made = await setup.kl.generate_key(new_org(), name="silent", type="secret")
    assert made.secret
    async with setup.verifier() as verifier:
        await verifier.verify(made.secret)
        assert await remote_verifies(setup, verifier, made.secret) == 0
        lost = verifier.consumer_name
        assert lost is not None
        await setup.js.delete_consumer(setup.stream.nats_stream, lost)
        await until(lambda: not verifier.trusted or verifier.consumer_name != lost)
        assert await remote_verifies(setup, verifier, made.secret) == 1
        await until(lambda: verifier.trusted)
        assert verifier.consumer_name != lost


async def test_three_verifiers_each_refuse_a_revoked_key(setup: Setup) -> None:
    """Three verifiers, one revocation: each one refuses the key once the event arrived."""
    org = new_org()
    made = await setup.kl.generate_key(org, name="fleet", type="secret")
    assert made.secret
    verifiers = [setup.verifier() for _ in range(3)]
    for verifier in verifiers:
        await verifier.start()
    try:
        for verifier in verifiers:
            assert (await verifier.verify(made.secret)).valid
        revoked = await setup.kl.revoke_key(org, made.key.id, "leaked")
        for verifier in verifiers:
            assert await verifier.wait_for_position(revoked.position)
            assert (await verifier.verify(made.secret)).code == "REVOKED"
    finally:
        for verifier in verifiers:
            await verifier.stop()


async def test_start_returns_while_nats_is_unreachable_and_connects_later(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """NATS down at start: start returns (after one connect attempt's timeout), every verify
    asks keyledger, and once NATS answers the verifier goes live by itself."""
    made = await setup.kl.generate_key(new_org(), name="early", type="secret")
    assert made.secret
    async with tcp_proxy(setup.nats_url) as proxy:
        await proxy.cut()  # nothing listens on the proxy's port
        with caplog.at_level(logging.WARNING, "keyledger_client.local_verifier"):
            async with asyncio.timeout(60), setup.verifier(proxy.url) as verifier:  # a hang
                assert not verifier.trusted
                assert (await verifier.verify(made.secret)).code == "VALID"
                assert await remote_verifies(setup, verifier, made.secret) == 1
                assert len(verifier.cache) == 0
                lines = [r.getMessage() for r in caplog.records]
                assert any(f"127.0.0.1:{proxy.port}" in line for line in lines), lines
                assert any("ConnectionRefusedError" in line for line in lines), lines

                await proxy.restore()
                await until(lambda: verifier.trusted)
                await verifier.verify(made.secret)
                assert await remote_verifies(setup, verifier, made.secret) == 0


async def test_an_unreachable_nats_names_the_server_not_its_credentials(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    with caplog.at_level(logging.WARNING, "keyledger_client.local_verifier"):
        async with asyncio.timeout(60), setup.verifier(f"nats://kl:hunter2@127.0.0.1:{port}"):
            pass
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"nats://***@127.0.0.1:{port}" in line for line in lines), lines
    assert not any("hunter2" in line for line in lines)


async def test_a_stream_nats_does_not_have_is_an_error_naming_it(setup: Setup) -> None:
    verifier = LocalVerifier(setup.kl, setup.nats_url, stream="NO_SUCH_STREAM")
    with pytest.raises(LookupError, match="NO_SUCH_STREAM"):
        async with asyncio.timeout(60):
            await verifier.start()
    assert verifier.consumer_name is None and not verifier.trusted
