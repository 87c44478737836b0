"""Whether this installation runs its hot paths compiled (setup.py, mypyc)."""

from __future__ import annotations

from typing import Literal

from service.verification import policy

HotPath = Literal["compiled", "interpreted"]


def hot_path() -> HotPath:
    """``compiled`` when the hot paths were built with ``KEYLEDGER_COMPILE=1``.

    Told by one of its modules: a compiled module is an extension (``.so``),
    and setup.py compiles them all or none.
    """
    return "interpreted" if (policy.__file__ or "").endswith(".py") else "compiled"
