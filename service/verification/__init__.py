"""Verification: is this credential good, for this request, right now?

Everything that answers ``POST /v1/verify`` and authenticates service keys,
apart from HTTP:

- ``policy``: the verification decision, pure (check order, codes, verdicts).
- ``signing``: the payload a client signs and the signature check, pure.
- ``rate_limits``: per-key fixed-window rate limits, in memory.
- ``index``: every key a replica can verify, in memory, folded from the log.
- ``feed``: keeps the index current (PostgreSQL log follower, JetStream).
- ``verifier``: verification as a replica serves it (index, feed, limits, usage).
- ``callers``: who is calling — service keys of the ``_system`` org.

Layers point one way: ``events`` ← ``service.domain`` ← ``service.store`` ←
``projections`` (read models) and ``service.verification`` ← the service
layer ← the entrypoints (``service.http``, ``service.cli``). Nothing here
imports ``projections``, and ``projections`` never imports this package
(``tests/unit/test_layers.py`` checks it).
"""
