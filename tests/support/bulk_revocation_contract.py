"""Bulk revocation as one reusable test case, run over each way of recording commands.

A test module subclasses ``BulkRevocationContract`` and provides a
``key_commands`` fixture (as for ``KeyCommandsContract``): the in-memory
commands and the PostgreSQL handler must revoke alike.
"""

from __future__ import annotations

from typing import Any

import pytest

from events.models import Actor
from service.domain.bulk_revocation import AllKeys, CreatedBy, NamedKeys
from service.key_lifecycle import Issuer, KeyCommands, KeyLifecycle, NewKey
from tests.support.key_commands_contract import PEPPER, issuer, new_org, refusal, retry

LEAKER = Actor(id="key_leaked_service_key")
OTHER = Actor(id="key_other_service_key")


class BulkRevocationContract:
    """What ``KeyLifecycle.revoke_many`` does over any ``KeyCommands``."""

    @pytest.fixture
    def key_commands(self) -> KeyCommands:
        raise NotImplementedError("a subclass provides commands with an active-key limit of 2+")

    @pytest.fixture
    def keys(self, key_commands: KeyCommands) -> KeyLifecycle:
        return KeyLifecycle(key_commands, PEPPER)

    async def new_key(
        self, keys: KeyLifecycle, org_id: str, actor: Actor | None = None, **fields: Any
    ) -> str:
        who = Issuer(org_id, actor) if actor else issuer(org_id)
        issued = await keys.generate(who, NewKey(**{"name": "k", "type": "secret", **fields}))
        assert issued.outcome.state is not None
        return issued.outcome.state.key_id

    async def statuses(self, keys: KeyLifecycle, org_id: str, key_ids: list[str]) -> list[str]:
        states = [await keys.commands.load_state(org_id, key_id) for key_id in key_ids]
        return [state.status if state else "absent" for state in states]

    async def test_named_keys_are_revoked_together_and_revoked_ones_left(
        self, keys: KeyLifecycle
    ) -> None:
        org = new_org()
        first, second = await self.new_key(keys, org), await self.new_key(keys, org)
        await keys.disable(issuer(org), second, None)
        done = await self.new_key(keys, org, environment="test")
        await keys.revoke(issuer(org), done, "unused")

        outcome = await keys.revoke_many(issuer(org), NamedKeys((first, second, done)), "leaked")

        assert (outcome.revoked, outcome.already_terminal) == ((first, second), (done,))
        assert [(e.key_id, e.event_type, e.data["reason"]) for e in outcome.events] == [
            (first, "KeyRevoked", "leaked"),
            (second, "KeyRevoked", "leaked"),
        ]
        assert {e.actor for e in outcome.events} == {issuer(org).actor}
        assert outcome.position == outcome.events[-1].position
        assert await self.statuses(keys, org, [first, second, done]) == ["revoked"] * 3
        # Revoked keys free their active slots at once (the registry follows the events).
        await self.new_key(keys, org)
        await self.new_key(keys, org)

        again = await keys.revoke_many(issuer(org), NamedKeys((first, done)), "other")
        assert (again.revoked, again.already_terminal, again.events) == ((), (first, done), ())
        assert again.position >= outcome.position

    async def test_created_by_takes_what_one_actor_generated_in_that_org_only(
        self, keys: KeyLifecycle
    ) -> None:
        org, elsewhere = new_org(), new_org()
        leaked = [await self.new_key(keys, org, LEAKER) for _ in range(2)]
        other = await self.new_key(keys, org, OTHER, environment="test")
        abroad = await self.new_key(keys, elsewhere, LEAKER)

        outcome = await keys.revoke_many(issuer(org), CreatedBy(LEAKER.id), "compromised")

        assert sorted(outcome.revoked) == sorted(leaked)
        assert await self.statuses(keys, org, [other]) == ["active"]
        assert await self.statuses(keys, elsewhere, [abroad]) == ["active"]
        # Already revoked keys are not selected again.
        again = await keys.revoke_many(issuer(org), CreatedBy(LEAKER.id), "compromised")
        assert (again.revoked, again.already_terminal) == ((), ())

    async def test_all_within_an_environment(self, keys: KeyLifecycle) -> None:
        org = new_org()
        live = await self.new_key(keys, org)
        tests = [await self.new_key(keys, org, environment="test") for _ in range(2)]

        outcome = await keys.revoke_many(issuer(org), AllKeys(), "rotated", "test")

        assert sorted(outcome.revoked) == sorted(tests)
        assert await self.statuses(keys, org, [live]) == ["active"]
        everything = await keys.revoke_many(issuer(org), AllKeys(), "rotated")
        assert everything.revoked == (live,)

    async def test_an_unknown_named_id_refuses_it_all_and_writes_nothing(
        self, keys: KeyLifecycle
    ) -> None:
        org, elsewhere = new_org(), new_org()
        mine = await self.new_key(keys, org)
        theirs = await self.new_key(keys, elsewhere)
        error = await refusal(
            "key_not_found", keys.revoke_many(issuer(org), NamedKeys((mine, theirs)), "leaked")
        )
        assert error.details == {"missing": [theirs]}
        assert await self.statuses(keys, org, [mine]) == ["active"]
        assert await self.statuses(keys, elsewhere, [theirs]) == ["active"]

    async def test_an_idempotent_retry_replays_the_first_answer(self, keys: KeyLifecycle) -> None:
        org = new_org()
        key_id = await self.new_key(keys, org)
        first = await keys.revoke_many(
            issuer(org, idempotent=retry("bulk-1", "all")), AllKeys(), "leaked"
        )
        replay = await keys.revoke_many(
            issuer(org, idempotent=retry("bulk-1", "all")), AllKeys(), "leaked"
        )
        assert first.answer() == replay.answer()
        assert first.revoked == (key_id,) and replay.replayed and not replay.events

        await refusal(
            "idempotency_key_reused",
            keys.revoke_many(issuer(org, idempotent=retry("bulk-1", "other")), AllKeys(), "leaked"),
        )
        # One memory for every command: a single revoke cannot reuse the key either.
        await refusal(
            "idempotency_key_reused",
            keys.revoke(issuer(org, idempotent=retry("bulk-1", "single")), key_id, "leaked"),
        )
