"""The key use cases over PostgreSQL (the group commit) keep the same contract as in memory.

The contract is ``tests/support/key_commands_contract.py``; it also runs, with no
database, in ``tests/unit/test_in_memory_use_cases.py``.
"""

from __future__ import annotations

import asyncpg
import pytest

from service.key_commands import KeyCommandHandler
from service.key_lifecycle import KeyCommands
from tests.support.bulk_revocation_contract import BulkRevocationContract
from tests.support.key_commands_contract import QUOTA, KeyCommandsContract


class TestPostgresKeyCommands(KeyCommandsContract):
    @pytest.fixture
    def key_commands(self, pool: asyncpg.Pool) -> KeyCommands:
        return KeyCommandHandler(pool, max_active_keys=QUOTA)


class TestPostgresBulkRevocation(BulkRevocationContract):
    @pytest.fixture
    def key_commands(self, pool: asyncpg.Pool) -> KeyCommands:
        return KeyCommandHandler(pool, max_active_keys=QUOTA)
