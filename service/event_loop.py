"""Which asyncio event loop a process runs: ``KEYLEDGER_EVENT_LOOP`` (auto, asyncio, uvloop).

uvloop is optional (``pip install 'keyledger[fast]'``). ``auto`` takes it when it
is installed and the standard loop otherwise; ``uvloop`` insists on it and
refuses to start without it, so a deployment that counts on it finds out at
once rather than from its throughput.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from service.settings import EventLoopChoice, SettingsError


def uvloop_installed() -> bool:
    """Whether the optional ``uvloop`` package can be imported."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def resolved_loop(choice: EventLoopChoice) -> Literal["asyncio", "uvloop"]:
    """The loop ``choice`` stands for here: ``auto`` becomes whichever is available."""
    if choice == "asyncio":
        return "asyncio"
    if uvloop_installed():
        return "uvloop"
    if choice == "uvloop":
        raise SettingsError(
            "KEYLEDGER_EVENT_LOOP=uvloop but uvloop is not installed:"
            " pip install 'keyledger[fast]', or set KEYLEDGER_EVENT_LOOP=auto"
        )
    return "asyncio"


def loop_factory(choice: EventLoopChoice) -> Callable[[], asyncio.AbstractEventLoop]:
    """Makes a new event loop of the chosen kind (for ``asyncio.Runner`` or ``run_app``)."""
    if resolved_loop(choice) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop
