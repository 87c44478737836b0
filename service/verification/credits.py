"""Spending a key's credits: blocks reserved in PostgreSQL, spent in memory.

A replica takes a block of a key's credits with one atomic update
(``CreditBalances.reserve``) and spends it request by request without going
back to the database; when the block runs out it takes another. Every credit
is taken by at most one replica and spent at most once, so, whatever the
number of replicas, there are never more ``VALID`` answers than credits. The
block is a share of what is left (``remaining / (4 × replicas)``, at most
``MAX_BLOCK``), so blocks shrink as the balance nears 0 and no replica sits on
credits another one needs; a block idle for ``IDLE_SECONDS`` is given back.

A block is tagged with the version of the event that set the balance it came
from (``epoch``). Once this replica's index has a newer setting (a PATCH, a
refill), the old block is dropped: the new balance stands as set. Credits a
replica holds when it stops are given back; a replica that dies loses its
block (fewer ``VALID`` answers, never more).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import structlog

from service.store.credit_balances import CreditBalances
from service.verification.index import IndexEntry

log = structlog.get_logger(__name__)

MAX_BLOCK = 1000
IDLE_SECONDS = 2.0
# After a reservation found too few credits, the key is answered from memory this long: a
# flood of requests for a spent key must not become a flood of queries.
EXHAUSTED_SECONDS = 0.5


@dataclass(slots=True)
class _Block:
    epoch: int
    available: int
    # What the balance in PostgreSQL said after the last reservation.
    left_elsewhere: int
    used_at: float


class CreditLedger:
    """This replica's blocks of credits, one per key being spent."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        replicas: Callable[[], int] = lambda: 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.replicas = replicas
        self.clock = clock
        self.balances = CreditBalances()
        self._blocks: dict[str, _Block] = {}
        self._reserving: dict[str, asyncio.Lock] = {}
        # key id -> (epoch, until when) of a balance found too small.
        self._exhausted: dict[str, tuple[int, float]] = {}

    async def spend(self, entry: IndexEntry, cost: int) -> int | None:
        """Spend ``cost`` of the key's credits: what is left after, or None when too few are.

        Nothing is spent when there are too few. What is left counts what
        PostgreSQL had after this replica's last reservation and what this
        replica still holds; other replicas' blocks are not in it.
        """
        block = self._current(entry)
        if block is None or block.available < cost:
            if self._known_exhausted(entry):
                return None
            lock = self._reserving.setdefault(entry.key_id, asyncio.Lock())
            async with lock:  # one reservation at a time per key: the others then spend it
                block = self._current(entry)
                if block is None or block.available < cost:
                    block = await self._reserve(entry, cost, block)
        if block is None or block.available < cost:
            return None
        block.available -= cost
        block.used_at = self.clock()
        return block.available + block.left_elsewhere

    def _known_exhausted(self, entry: IndexEntry) -> bool:
        known = self._exhausted.get(entry.key_id)
        if known is None:
            return False
        epoch, until = known
        if epoch >= entry.credits_version and self.clock() < until:
            return True
        del self._exhausted[entry.key_id]
        return False

    def _current(self, entry: IndexEntry) -> _Block | None:
        block = self._blocks.get(entry.key_id)
        if block is not None and block.epoch < entry.credits_version:
            # The balance was set again since this block was taken: it no longer exists.
            del self._blocks[entry.key_id]
            return None
        return block

    async def _reserve(self, entry: IndexEntry, cost: int, held: _Block | None) -> _Block | None:
        need = cost - (held.available if held is not None else 0)
        left = (
            held.left_elsewhere
            if held is not None
            else (entry.credits.remaining if entry.credits else 0)
        )
        size = min(MAX_BLOCK, left // (4 * max(1, self.replicas())))
        taken = await self.balances.reserve(self.pool, entry.key_id, need, max(need, size))
        if taken is None:
            if held is not None:
                held.left_elsewhere = 0
            epoch = held.epoch if held is not None else entry.credits_version
            self._exhausted[entry.key_id] = (epoch, self.clock() + EXHAUSTED_SECONDS)
            return held
        if held is not None and held.epoch == taken.epoch:
            held.available += taken.granted
            held.left_elsewhere = taken.remaining
            return held
        if held is not None:
            await self._give_back(entry.key_id, held)
        block = _Block(taken.epoch, taken.granted, taken.remaining, self.clock())
        self._blocks[entry.key_id] = block
        return block

    async def give_back_idle(self) -> None:
        """Return the blocks no request has spent from lately."""
        cutoff = self.clock() - IDLE_SECONDS
        for key_id, block in list(self._blocks.items()):
            lock = self._reserving.get(key_id)
            if block.used_at < cutoff and (lock is None or not lock.locked()):
                del self._blocks[key_id]
                await self._give_back(key_id, block)

    async def give_back_all(self) -> None:
        """Return every block (the replica stops)."""
        blocks, self._blocks = self._blocks, {}
        for key_id, block in blocks.items():
            await self._give_back(key_id, block)

    async def _give_back(self, key_id: str, block: _Block) -> None:
        if block.available > 0:
            await self.balances.give_back(self.pool, key_id, block.epoch, block.available)

    async def run(self) -> None:
        """Give idle blocks back, every second, until cancelled (then all of them)."""
        try:
            while True:
                await asyncio.sleep(1.0)
                try:
                    await self.give_back_idle()
                except Exception as exc:
                    log.warning("credit_give_back_failed", error=type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await self.give_back_all()
