"""How the command line fails: one line on stderr, and an exit code that says whose fault.

Exit 2 is for what the user can fix by changing the command or its settings
(``SettingsError``, ``UsageError``); exit 1 for everything else. ``--debug``
shows the traceback instead of the one line.
"""

from __future__ import annotations

from service.settings import SettingsError

USAGE_EXIT = 2
FAILURE_EXIT = 1


class UsageError(RuntimeError):
    """A command that cannot run as given (a busy port, a busy data folder, a bad flag)."""


def one_line(exc: BaseException) -> tuple[str, int]:
    """The message (first line only) and exit code for ``exc``."""
    if isinstance(exc, SettingsError | UsageError):
        return _first_line(str(exc)), USAGE_EXIT
    if isinstance(exc, RuntimeError):
        return _first_line(str(exc)), FAILURE_EXIT
    reason = _first_line(str(exc)) or "no message"
    return (
        f"unexpected error: {type(exc).__name__}: {reason} (run with --debug for the traceback)",
        FAILURE_EXIT,
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
