"""The key use cases as one reusable test case, run over each way of recording commands.

A test module subclasses ``KeyCommandsContract`` and provides a
``key_commands`` fixture: a ``service.key_lifecycle.KeyCommands`` whose
active-key limit is ``QUOTA``. The same ``KeyLifecycle`` use cases then run
over it: ``InMemoryKeyCommands`` (milliseconds, no database) and the
PostgreSQL ``KeyCommandHandler`` (its group commit) must answer alike.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from events.models import Actor
from service.domain import key_material
from service.domain.orgs import SYSTEM_ORG
from service.errors import KeyledgerError
from service.key_commands import IdempotentRequest
from service.key_lifecycle import Issuer, KeyCommands, KeyLifecycle, NewKey
from service.verification.callers import Caller

QUOTA = 2
PEPPER = b"contract-pepper"
ACTOR = Actor(id="test:use-cases")


def new_org() -> str:
    return f"org-{uuid.uuid4().hex[:12]}"


def issuer(org_id: str, **conditions: Any) -> Issuer:
    return Issuer(org_id, ACTOR, **conditions)


def retry(key: str, request: str) -> IdempotentRequest:
    return IdempotentRequest(key, IdempotentRequest.fingerprint_of("POST", "/t", request))


async def refusal(code: str, call: Any) -> KeyledgerError:
    with pytest.raises(KeyledgerError) as refused:
        await call
    assert refused.value.code == code, refused.value
    return refused.value


class KeyCommandsContract:
    """What the use cases do over any ``KeyCommands``; subclasses provide ``key_commands``."""

    @pytest.fixture
    def key_commands(self) -> KeyCommands:
        raise NotImplementedError("a subclass provides commands with an active-key limit of 2")

    @pytest.fixture
    def keys(self, key_commands: KeyCommands) -> KeyLifecycle:
        return KeyLifecycle(key_commands, PEPPER)

    async def new_key(self, keys: KeyLifecycle, org_id: str, **fields: Any) -> str:
        issued = await keys.generate(
            issuer(org_id), NewKey(**{"name": "k", "type": "secret", **fields})
        )
        assert issued.outcome.state is not None
        return issued.outcome.state.key_id

    async def test_a_key_through_its_whole_life(
        self, keys: KeyLifecycle, key_commands: KeyCommands
    ) -> None:
        org = new_org()
        issued = await keys.generate(issuer(org), NewKey(name="bot", type="secret"))
        state, secret = issued.outcome.state, issued.handed_out["secret"]
        assert state is not None and secret is not None and issued.outcome.created
        assert state.secret_hash == key_material.secret_hash(PEPPER, secret)
        key_id, position = state.key_id, issued.outcome.position
        steps: list[tuple[Any, str, str]] = [
            (lambda who: keys.rename(who, key_id, "renamed"), "KeyRenamed", "active"),
            (lambda who: keys.disable(who, key_id, "paused"), "KeyDisabled", "disabled"),
            (lambda who: keys.enable(who, key_id), "KeyEnabled", "active"),
            (lambda who: keys.rotate(who, key_id, "1h"), "KeyRotated", "active"),
            (lambda who: keys.revoke(who, key_id, "compromised"), "KeyRevoked", "revoked"),
        ]
        for version, (run, event_type, status) in enumerate(steps, start=1):
            result = await run(issuer(org, if_match=version))
            outcome = getattr(result, "outcome", result)
            assert [e.event_type for e in outcome.events] == [event_type]
            assert [e.stream_version for e in outcome.events] == [version + 1]
            assert outcome.state.status == status == outcome.key["status"]
            assert outcome.state.version == version + 1 and outcome.position > position
            assert not outcome.created and not outcome.replayed
            position = outcome.position
        final = await key_commands.load_state(org, key_id)
        assert final is not None and final.status == "revoked" and final.name == "renamed"
        assert final.previous_secret_hash == state.secret_hash != final.secret_hash
        await refusal("key_not_mutable", keys.rename(issuer(org), key_id, "late"))
        await refusal("key_not_mutable", keys.enable(issuer(org), key_id))

    async def test_if_match_refuses_a_stale_version_and_writes_nothing(
        self, keys: KeyLifecycle, key_commands: KeyCommands
    ) -> None:
        org = new_org()
        key_id = await self.new_key(keys, org)
        await keys.rename(issuer(org, if_match=1), key_id, "second")
        for stale in (1, 0, 3, 99):
            refused = await refusal(
                "version_mismatch", keys.disable(issuer(org, if_match=stale), key_id, None)
            )
            assert refused.details == {"current_version": 2}
        state = await key_commands.load_state(org, key_id)
        assert state is not None and (state.version, state.status) == (2, "active")
        # Without If-Match the command is decided on whatever version is current.
        assert (await keys.disable(issuer(org), key_id, None)).state is not None

    async def test_an_idempotent_retry_replays_the_first_outcome(
        self, keys: KeyLifecycle, key_commands: KeyCommands
    ) -> None:
        org = new_org()
        first = await keys.generate(
            issuer(org, idempotent=retry("r-1", "a")), NewKey(name="once", type="secret")
        )
        again = await keys.generate(
            issuer(org, idempotent=retry("r-1", "a")), NewKey(name="once", type="secret")
        )
        assert again.outcome.replayed and again.outcome.created and again.outcome.events == ()
        assert again.handed_out == {"secret": None}
        assert (again.outcome.key, again.outcome.position) == (
            first.outcome.key,
            first.outcome.position,
        )
        assert first.outcome.state is not None
        key_id = first.outcome.state.key_id
        renamed = await keys.rename(issuer(org, idempotent=retry("r-2", "b")), key_id, "x")
        replayed = await keys.rename(issuer(org, idempotent=retry("r-2", "b")), key_id, "x")
        assert replayed.replayed and replayed.key == renamed.key and not replayed.created
        state = await key_commands.load_state(org, key_id)
        assert state is not None and state.version == 2  # the retry wrote nothing
        await refusal(
            "idempotency_key_reused",
            keys.rename(issuer(org, idempotent=retry("r-1", "other")), key_id, "y"),
        )
        # Idempotency keys are per caller: another actor's "r-2" is a new command.
        other = Issuer(org, Actor(id="test:someone-else"), idempotent=retry("r-2", "b"))
        assert not (await keys.rename(other, key_id, "x")).replayed

    async def test_the_same_idempotency_key_at_once_is_recorded_once(
        self, keys: KeyLifecycle
    ) -> None:
        org = new_org()
        request = retry("twice-at-once", "same body")
        issued = await asyncio.gather(
            *(
                keys.generate(issuer(org, idempotent=request), NewKey(name="k", type="secret"))
                for _ in range(2)
            )
        )
        first, second = sorted((i.outcome for i in issued), key=lambda o: o.replayed)
        assert not first.replayed and second.replayed
        assert (second.key, second.position) == (first.key, first.position)

    async def test_the_active_key_limit_counts_per_org_and_environment(
        self, keys: KeyLifecycle
    ) -> None:
        org = new_org()
        first = await self.new_key(keys, org)
        await self.new_key(keys, org)
        refused = await refusal("active_key_limit", self.new_key(keys, org))
        assert refused.details is not None
        await self.new_key(keys, org, environment="test")  # another environment
        await self.new_key(keys, new_org())  # another org
        await keys.disable(issuer(org), first, None)
        third = await self.new_key(keys, org)  # a disabled key holds no slot
        await refusal("active_key_limit", keys.enable(issuer(org), first))
        await keys.revoke(issuer(org), third, "unused")
        assert (await keys.enable(issuer(org), first)).state is not None
        for _ in range(QUOTA + 1):  # service keys have no limit
            await self.new_key(keys, SYSTEM_ORG, scopes=("keys:read",))

    async def test_concurrent_generates_never_exceed_the_limit(self, keys: KeyLifecycle) -> None:
        org = new_org()
        racing = [self.new_key(keys, org) for _ in range(QUOTA + 4)]
        results = await asyncio.gather(*racing, return_exceptions=True)
        made = [r for r in results if isinstance(r, str)]
        refused = [r for r in results if isinstance(r, KeyledgerError)]
        assert len(made) == QUOTA and len(refused) == 4
        assert {r.code for r in refused} == {"active_key_limit"}

    async def test_a_key_of_another_org_or_none_is_not_found(
        self, keys: KeyLifecycle, key_commands: KeyCommands
    ) -> None:
        org, stranger = new_org(), new_org()
        key_id = await self.new_key(keys, org)
        for key in (key_id, "key_01HZZZZZZZZZZZZZZZZZZZZZZZ"):
            await refusal("key_not_found", keys.rename(issuer(stranger), key, "x"))
            await refusal("key_not_found", keys.rotate(issuer(stranger), key, "1h"))
            await refusal("key_not_found", keys.revoke(issuer(stranger), key, "unused"))
            assert await key_commands.load_state(stranger, key) is None
        state = await key_commands.load_state(org, key_id)
        assert state is not None and state.version == 1

    async def test_a_service_key_acts_only_while_it_may(self, keys: KeyLifecycle) -> None:
        service = await keys.generate(
            issuer(SYSTEM_ORG), NewKey(name="svc", type="secret", scopes=("admin",))
        )
        state = service.outcome.state
        assert state is not None
        caller = Caller(state.key_id, frozenset({"admin"}), None, state.secret_hash)
        org = new_org()
        acting = issuer(org, caller=caller)
        key_id = (await keys.generate(acting, NewKey(name="k", type="secret"))).outcome.key["id"]
        wrong_secret = Caller(state.key_id, caller.scopes, None, "f" * 64)
        await refusal(
            "api_key_inactive", keys.rename(issuer(org, caller=wrong_secret), key_id, "x")
        )
        tenant = Caller(key_id, caller.scopes, None, None)  # not a service key
        await refusal("api_key_inactive", keys.rename(issuer(org, caller=tenant), key_id, "x"))
        await keys.disable(issuer(SYSTEM_ORG), state.key_id, "paused")
        await refusal("api_key_inactive", keys.rename(acting, key_id, "x"))
        await keys.enable(issuer(SYSTEM_ORG), state.key_id)
        assert (await keys.rename(acting, key_id, "x")).state is not None
        await keys.revoke(issuer(SYSTEM_ORG), state.key_id, "compromised")
        await refusal("api_key_inactive", keys.rename(acting, key_id, "y"))
