"""The projections this version of keyledger runs, by name."""

from __future__ import annotations

from projections.key_views import KeyViews
from projections.runner import Projection


def all_projections() -> list[Projection]:
    """Every projection the runner feeds and ``projections rebuild`` knows."""
    return [KeyViews()]


def projection_named(name: str) -> Projection:
    """The projection called ``name``; KeyError names the known ones."""
    for projection in all_projections():
        if projection.name == name:
            return projection
    known = ", ".join(p.name for p in all_projections())
    raise KeyError(f"no projection named {name!r} (known: {known})")
