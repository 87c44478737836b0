"""A started replica's garbage collector: the start frozen, the young generation collected less."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from service.garbage_collection import YOUNG_THRESHOLD, settle_after_start


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_what_the_start_made_is_frozen_and_young_collections_are_rarer() -> None:
    made_at_start = [object() for _ in range(10)], {"index": [1, 2, 3]}
    _, middle, old = gc.get_threshold()
    settle_after_start()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    # Frozen: out of every generation the collector walks.
    walked = {id(o) for o in gc.get_objects()}
    assert all(gc.is_tracked(o) and id(o) not in walked for o in made_at_start)
