"""Child processes that never outlive the process that started them.

``keyledger dev`` starts a nats-server and a PostgreSQL; ``serve --workers``
starts workers. None may be left running when its parent dies, however it
dies (Ctrl-C, a closed terminal, ``kill -9``):

- a direct child asks the kernel for SIGTERM when its parent dies
  (``PR_SET_PDEATHSIG``, Linux; :func:`parent_death_signal`);
- a server that daemonizes (PostgreSQL's postmaster is started by ``pg_ctl``,
  so it is no child of ours) is watched by a small :class:`Watchdog`
  process: it reads the pids to stop on a pipe from the parent, and when the
  pipe ends without a goodbye (the kernel closes it on any death), it stops
  them.

Run as ``python -m service.process_ties``, this module is that watchdog; it
imports the standard library only, so it starts quickly.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_GOODBYE = "stopped"


def parent_death_signal(signum: int = signal.SIGTERM) -> None:
    """Ask for ``signum`` when the parent process ends (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum)


def alive(pid: int) -> bool:
    """True while a process ``pid`` exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state follows the command name in parentheses; Z is a zombie, X dead.
    return status.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def runs_with(pid: int, marker: str) -> bool:
    """True when process ``pid`` runs and its command line names ``marker`` (no pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in cmdline and alive(pid)


def stop_process(pid: int, marker: str, signum: int, timeout: float = 30.0) -> bool:
    """Send ``signum`` to ``pid`` if it still runs with ``marker``; wait until it is gone.

    Returns True when it was running. SIGKILL after ``timeout`` seconds.
    """
    if not runs_with(pid, marker):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)
    return True


class Watchdog:
    """A process that stops the servers it was told about if this process dies first."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "service.process_ties"],
            stdin=subprocess.PIPE,
            text=True,
            # Neither Ctrl-C nor a closed terminal reach it: only the pipe's end does.
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[1],
        )

    def watch(self, pid: int, marker: str, signum: int) -> None:
        """Stop ``pid`` (if it still runs with ``marker``) with ``signum`` should we die."""
        assert self._process.stdin is not None
        self._process.stdin.write(f"{pid} {int(signum)} {marker}\n")
        self._process.stdin.flush()

    def release(self) -> None:
        """We stopped the servers ourselves: the watchdog ends without touching anything."""
        assert self._process.stdin is not None
        with contextlib.suppress(OSError):
            self._process.stdin.write(_GOODBYE + "\n")
            self._process.stdin.close()
        self._process.wait()


def _watch() -> None:
    """The watchdog: read ``PID SIGNAL MARKER`` lines; at the pipe's end, stop them all."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    watched: list[tuple[int, int, str]] = []
    for line in sys.stdin:
        if line.strip() == _GOODBYE:
            return
        pid, signum, marker = line.rstrip("\n").split(" ", 2)
        watched.append((int(pid), int(signum), marker))
    # Our parent died without saying goodbye: stop what it started, last first.
    for pid, signum, marker in reversed(watched):
        stop_process(pid, marker, signum)


if __name__ == "__main__":
    _watch()
