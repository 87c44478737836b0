"""The garbage collector of a serving process, set once the replica has started.

A command makes and drops many small objects (the request, models, envelopes,
rows), and CPython's collector walks its young generation every 700
allocations net of frees, and now and then every object the process holds:
under load that was ≈ 5-7 % of a GenerateKey's CPU. What the start leaves
(modules, pydantic's schemas, the verification index loaded from the log)
lives as long as the process, so it is frozen out of the collector's walks,
and the young generation is collected less often; reference counting still
frees nearly everything at once, the collector being only for cycles.
"""

from __future__ import annotations

import gc

# Allocations (net of frees) between collections of the youngest generation (CPython: 700).
YOUNG_THRESHOLD = 10_000


def settle_after_start() -> None:
    """Freeze what the start made and collect the young generation less often.

    No collection first: the start runs with the collector off (``keyledger serve``),
    and one full walk of a 1M-key index would add ≈0.4 s to the time to ready; what
    little cyclic garbage the start left is kept, once, for the process's life.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
