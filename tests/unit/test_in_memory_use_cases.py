"""The key use cases over the in-memory stores: the service layer in milliseconds.

The same ``KeyCommandsContract`` runs over PostgreSQL in
``tests/integration/test_use_case_contract.py``.
"""

from __future__ import annotations

import pytest

from service import revocation_session
from service.domain import bulk_revocation
from service.errors import KeyledgerError
from service.in_memory_commands import InMemoryKeyCommands
from service.key_lifecycle import KeyCommands, KeyLifecycle, NewKey
from service.store.audit_chain import walk_chain
from tests.support.bulk_revocation_contract import BulkRevocationContract
from tests.support.key_commands_contract import QUOTA, KeyCommandsContract, issuer, new_org


class TestInMemoryKeyCommands(KeyCommandsContract):
    @pytest.fixture
    def key_commands(self) -> KeyCommands:
        return InMemoryKeyCommands(max_active_keys=QUOTA)


class TestInMemoryBulkRevocation(BulkRevocationContract):
    @pytest.fixture
    def key_commands(self) -> KeyCommands:
        return InMemoryKeyCommands(max_active_keys=QUOTA)


async def test_the_log_behind_the_use_cases_is_one_chain() -> None:
    commands = InMemoryKeyCommands(max_active_keys=QUOTA)
    keys = KeyLifecycle(commands, b"pepper")
    org = new_org()
    issued = await keys.generate(issuer(org), NewKey(name="k", type="signing"))
    assert issued.outcome.state is not None
    key_id = issued.outcome.state.key_id
    await keys.rotate(issuer(org), key_id, "0s")
    await keys.disable(issuer(org), key_id, None)
    log = await commands.log.read_after(0)
    assert [e.event_type for e in log] == ["KeyGenerated", "KeyRotated", "KeyDisabled"]
    assert walk_chain(log).ok
    # The registry follows every command, as the PostgreSQL one does in its transaction.
    assert await commands.registry.count_active(org, "live", issued.outcome.state.created_at) == 0


async def test_a_refused_command_leaves_no_trace() -> None:
    commands = InMemoryKeyCommands(max_active_keys=1)
    keys = KeyLifecycle(commands, b"pepper")
    org = new_org()
    await keys.generate(issuer(org), NewKey(name="k", type="secret"))
    head = await commands.log.head()
    for _ in range(3):
        with pytest.raises(KeyledgerError, match="active"):
            await keys.generate(issuer(org), NewKey(name="k", type="secret"))
    assert await commands.log.head() == head
    assert await commands.due_for_expiry() == []


async def test_a_selection_over_the_limit_is_refused_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The limit is 10,000 keys; two stand in for it here.
    monkeypatch.setattr(bulk_revocation, "MAX_SELECTED_KEYS", 2)
    monkeypatch.setattr(revocation_session, "MAX_SELECTED_KEYS", 2)
    commands = InMemoryKeyCommands(max_active_keys=QUOTA)
    keys = KeyLifecycle(commands, b"pepper")
    org = new_org()
    for environment in ("live", "live", "test"):
        await keys.generate(issuer(org), NewKey(name="k", type="secret", environment=environment))
    head = await commands.log.head()
    with pytest.raises(KeyledgerError) as refused:
        await keys.revoke_many(issuer(org), bulk_revocation.AllKeys(), "leaked")
    assert (refused.value.code, refused.value.details) == ("too_many_keys", {"limit": 2})
    assert await commands.log.head() == head
    narrowed = await keys.revoke_many(issuer(org), bulk_revocation.AllKeys(), "leaked", "live")
    assert len(narrowed.revoked) == 2
