"""``keyledger dev`` never leaves servers behind, and a restart keeps its URLs.

However dev ends (Ctrl-C, a closed terminal, ``kill -9``) its embedded
PostgreSQL and nats-server stop with it; servers a dead dev left running are
stopped by the next start before it starts its own, so two nats-servers never
share one JetStream store.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats

from service.cli import dev_folder
from service.embedded import EmbeddedNats, free_port
from service.process_ties import alive
from tests.support.dev_process import clean_environment, launch_dev

LISTENER = Path(__file__).resolve().parents[2] / "examples" / "revocation_listener.py"


def _wait_until_gone(pids: list[int]) -> list[int]:
    """The pids still alive after waiting (a bound, not a timed assertion: they end sooner)."""
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def _watchdog_of(process: subprocess.Popen[str]) -> int:
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    for child in map(int, children):
        if b"service.process_ties" in Path(f"/proc/{child}/cmdline").read_bytes():
            return child
    raise AssertionError("no watchdog")


def _exports(banner: str) -> dict[str, str]:
    return dict(re.findall(r"export (KEYLEDGER_\w+)='?([^'\n]+)'?", banner))


def test_servers_of_a_dead_dev_are_stopped_and_urls_kept(tmp_path: Path) -> None:
    folder, port = tmp_path / ".keyledger", free_port()
    args = ["--data-dir", str(folder), "--port", str(port)]
    process, banner = launch_dev(args)
    first = dev_folder.recorded_servers(folder)
    assert set(first) == {"postgres", "nats"}
    # Killed with its watchdog: nothing stops the postmaster (pg_ctl made it no child of
    # dev's), it is an orphan; the nats-server, dev's child, went with dev (PDEATHSIG).
    os.kill(_watchdog_of(process), signal.SIGKILL)
    process.kill()
    process.wait()
    assert alive(first["postgres"])

    # The pasted exports of the first start point into this folder: ignored, not "yours".
    process, again = launch_dev(args, env=clean_environment(**_exports(banner)))
    try:
        assert _wait_until_gone(list(first.values())) == []
        second = dev_folder.recorded_servers(folder)
        assert set(second.values()).isdisjoint(first.values())
        assert _exports(again) == _exports(banner)  # same URLs: the exports stay true
        # The nats-server dies under dev: a closed terminal still stops the rest.
        os.kill(second["nats"], signal.SIGKILL)
        process.send_signal(signal.SIGHUP)
        assert process.wait(60) in (0, 130)  # as Ctrl-C: 130 if it came before serving
    finally:
        process.kill()
    assert _wait_until_gone(list(second.values())) == []
    assert dev_folder.recorded_servers(folder) == {}


def test_kill_9_takes_the_servers_with_it(tmp_path: Path) -> None:
    folder = tmp_path / ".keyledger"
    process, _ = launch_dev(["--data-dir", str(folder), "--port", str(free_port())])
    servers = list(dev_folder.recorded_servers(folder).values())
    assert len(servers) == 2
    process.kill()
    process.wait()
    assert _wait_until_gone(servers) == []
    # And a Ctrl-C in its terminal (to the whole process group) after a restart is exit 0,
    # nothing left, and no error logged: the NATS client closes before its server stops.
    with (tmp_path / "dev.log").open("w+") as log:
        process, _ = launch_dev(["--data-dir", str(folder), "--port", str(free_port())], stderr=log)
        servers = list(dev_folder.recorded_servers(folder).values())
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(60) == 0
        log.seek(0)
        errors = [line for line in log if '"level": "error"' in line]
    assert errors == []
    assert _wait_until_gone(servers) == []


def test_the_listener_says_when_it_loses_nats_and_when_it_is_back(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    server.start()
    asyncio.run(_stream(server.url, "LISTENER_TEST"))
    listener = subprocess.Popen(
        [sys.executable, str(LISTENER), "--nats", server.url, "--stream", "LISTENER_TEST"],
        env=clean_environment(PYTHONPATH=str(LISTENER.parents[1])),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert listener.stderr is not None
    try:
        assert "listening at" in listener.stderr.readline()
        server.stop()
        assert "lost NATS at" in listener.stderr.readline()
        server.start()
        assert "reconnected to NATS at" in listener.stderr.readline()
    finally:
        listener.terminate()
        listener.wait(30)
        server.stop()


async def _stream(url: str, name: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(name=name, subjects=["keyledger.>"])
    finally:
        await nc.close()
