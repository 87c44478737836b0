"""A flood of random well-formed keys is answered from memory: 0 database round trips.

While the verification index is caught up, a secret it does not know is unknown
to the whole log as far as this replica can tell, so ``POST /v1/verify``,
``GET /v1/authorize`` and service-key authentication refuse it without asking
PostgreSQL (docs/security.md §4). Every database round trip of the verify path
goes through the connection pool of the ``Verifier`` and of the
``CallerAuthenticator``; here both count the connections they take.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from service.domain import key_material
from service.http.context import KEYLEDGER
from service.settings import Settings
from tests.support.api import Api, new_org
from tests.support.poison import isolated_app

FLOOD = 300


class CountingPool:
    """The app's pool, counting every connection taken from it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.acquired = 0

    def acquire(self) -> Any:
        self.acquired += 1
        return self.pool.acquire()


async def test_a_flood_of_random_keys_makes_no_query(
    postgres_server_url: str, settings: Settings
) -> None:
    # No sweeper writes while the flood runs: nothing moves the log head.
    async with isolated_app(
        postgres_server_url, settings, expiry_sweep_interval_seconds=3600
    ) as app:
        api = Api(app.client, app.admin_key)
        org = new_org()
        known = await api.generate(org)
        service = app.client.app[KEYLEDGER]
        counting = CountingPool(service.pool)
        service.verifier.pool = counting
        service.callers.pool = counting
        assert await service.feed.wait_for(known["position"], 10.0)
        assert service.index.caught_up

        # The counter sees the verify path's reads: the read-your-writes fallback.
        assert (await service.verifier.entry_from_database(known["secret"])) is not None
        assert counting.acquired >= 1
        counting.acquired = 0

        for number in range(FLOOD):
            secret = key_material.new_secret("secret", "live" if number % 2 else "test")
            assert key_material.is_well_formed(secret)
            status, _, verdict = await api.post("/v1/verify", {"key": secret})
            assert (status, verdict["code"]) == (200, "NOT_FOUND")
            response = await app.client.get(
                "/v1/authorize",
                headers={
                    "X-Keyledger-Service-Key": app.admin_key,
                    "Authorization": f"Bearer {secret}",
                },
            )
            assert (response.status, (await response.json())["code"]) == (401, "NOT_FOUND")
            # An unknown service key: refused by the authenticator, from the index too.
            response = await app.client.get(
                f"/v1/orgs/{org}/keys", headers={"Authorization": f"Bearer {secret}"}
            )
            assert response.status == 401
        assert service.index.caught_up
        assert counting.acquired == 0
        # The known key still verifies, from memory as well.
        status, _, verdict = await api.post("/v1/verify", {"key": known["secret"]})
        assert verdict["code"] == "VALID" and counting.acquired == 0
