"""``keyledger serve --workers N``: N server processes sharing one port (SO_REUSEPORT).

Each worker is a whole replica in a process of its own: its own event loop,
verification index, connection pool and NATS connections. The kernel spreads
new connections over the workers' listening sockets, so one Python process
per core serves verification without sharing a GIL. What must happen once
happens once across workers as across replicas: one outbox relay leads (a
session advisory lock), projection batches take turns on their checkpoint
row, and a second ``KeyExpired`` for a key is a no-op of the decider.

This process (the supervisor) serves nothing. It reserves the port, starts
the workers, prints one ready line once every worker listens, and on
SIGTERM or SIGINT passes SIGTERM to every worker and waits for them all:
each drains its in-flight requests and stops its service as a single
``keyledger serve`` does. A worker that exits on its own stops the others
and the supervisor exits 1, leaving restarts to whatever runs it (systemd,
Kubernetes). Workers get SIGTERM when the supervisor dies, even by SIGKILL
(``PR_SET_PDEATHSIG``), so none is left behind.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

from service.cli.failures import UsageError
from service.process_ties import parent_death_signal
from service.settings import Settings

READY = b"ready\n"
# Beyond the workers' own shutdown timeout: time to stop the service after the requests.
_STOP_MARGIN_SECONDS = 20.0


@dataclass(frozen=True, slots=True)
class Worker:
    """A started worker process and the pipe it reports readiness on."""

    number: int
    process: subprocess.Popen[bytes]
    ready_pipe: int


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT, not listening.

    It holds the port (``--port 0`` picks one) for the workers, which bind
    it too; connections only go to the listening sockets of the workers.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port} ({os.strerror(exc.errno or 0)}): pick another"
            " port with --port or KEYLEDGER_PORT"
        ) from None
    return sock


def die_with_parent(parent_pid: int) -> None:
    """In a worker: be sent SIGTERM when the supervisor ends (Linux), or end now if it has."""
    parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent_pid:  # it ended before the line above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _start(number: int, host: str, port: int) -> Worker:
    read_end, write_end = os.pipe()
    command = [
        sys.executable,
        "-m",
        "service.cli.main",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--worker-of",
        f"{os.getpid()}:{write_end}",
    ]
    # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which
    # then sends one SIGTERM (a second signal would cut a worker's clean stop short).
    process = subprocess.Popen(command, pass_fds=(write_end,), process_group=0)
    os.close(write_end)
    return Worker(number, process, read_end)


class _Stop:
    """Set by SIGTERM/SIGINT: the supervisor then stops every worker."""

    requested = False

    @classmethod
    def handle(cls, signum: int, frame: FrameType | None) -> None:
        cls.requested = True


def run_workers(settings: Settings, count: int, serving_line: str) -> int:
    """Run ``count`` workers on ``settings.host:settings.port`` until a signal; exit code."""
    reservation = reserve_port(settings.host, settings.port)
    port = reservation.getsockname()[1]
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _Stop.handle)
    workers = [_start(number, settings.host, port) for number in range(count)]
    try:
        if not _await_ready(workers):
            return 0 if _Stop.requested else 1
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        print(f"{serving_line} http://{host}:{port} ({count} workers)", flush=True)
        while not _Stop.requested:
            if any(worker.process.poll() is not None for worker in workers):
                return 1  # one stopped on its own: stop the rest (finally), report failure
            time.sleep(0.2)
        return 0
    finally:
        codes = _stop(workers, settings.shutdown_timeout_seconds + _STOP_MARGIN_SECONDS)
        reservation.close()
        for worker in workers:
            with contextlib.suppress(OSError):
                os.close(worker.ready_pipe)
        if any(code != 0 for code in codes):
            print(f"keyledger: worker exit codes {codes}", file=sys.stderr, flush=True)


def _await_ready(workers: list[Worker]) -> bool:
    """Wait until every worker wrote its ready line; False if one ended first, or a signal."""
    waiting = {worker.ready_pipe: worker for worker in workers}
    while waiting and not _Stop.requested:
        readable, _, _ = select.select(list(waiting), [], [], 0.2)
        for pipe in readable:
            if os.read(pipe, len(READY)) != READY:
                return False  # the pipe closed without the line: the worker ended
            del waiting[pipe]
        if any(worker.process.poll() is not None for worker in waiting.values()):
            return False
    return not waiting


def _stop(workers: list[Worker], within: float) -> list[int]:
    """SIGTERM to every running worker, then wait (SIGKILL after ``within`` seconds)."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + within
    codes = []
    for worker in workers:
        try:
            codes.append(worker.process.wait(max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            codes.append(worker.process.wait())
    return codes
