"""The outbox relay's checkpoint: per stream, the last position JetStream acknowledged.

The one home of the SQL on ``outbox_checkpoint``: the relay reads and moves
it, readiness reads the lag behind it, and the truncation witnesses read
every stream's checkpoint as a place that saw the log reach a position.
"""

from __future__ import annotations

import asyncpg

#: Every stream's checkpoint as a truncation witness (see ``service.store.log_witnesses``).
CHECKPOINTS_AS_WITNESSES = """
    SELECT 'outbox_checkpoint:' || stream, position, NULL FROM outbox_checkpoint
    WHERE position > 0
"""


async def read_checkpoint(db: asyncpg.Pool | asyncpg.Connection, stream: str) -> int:
    """The last position published to ``stream`` (0 before the first)."""
    position = await db.fetchval("SELECT position FROM outbox_checkpoint WHERE stream = $1", stream)
    return position or 0


async def save_checkpoint(conn: asyncpg.Connection, stream: str, position: int) -> None:
    """Record that ``stream`` has every event up to ``position``; never moves it back."""
    # GREATEST: a deposed leader finishing late must never move the checkpoint back.
    await conn.execute(
        """INSERT INTO outbox_checkpoint (stream, position) VALUES ($1, $2)
           ON CONFLICT (stream) DO UPDATE
           SET position = GREATEST(outbox_checkpoint.position, EXCLUDED.position),
               updated_at = now()""",
        stream,
        position,
    )


async def outbox_lag(db: asyncpg.Pool | asyncpg.Connection, stream: str) -> int:
    """Events committed but not yet acknowledged by ``stream`` (head − checkpoint)."""
    lag: int = await db.fetchval(
        """SELECT greatest(0, coalesce((SELECT max(position) FROM events), 0)
                - coalesce((SELECT position FROM outbox_checkpoint WHERE stream = $1), 0))""",
        stream,
    )
    return lag
