"""``keyledger dev`` as a user runs it: a real process, its banner read from stdout."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

KEYLEDGER = [sys.executable, "-m", "service.cli.main"]


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any ``KEYLEDGER_*`` setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    return {**env, **extra}


def launch_dev(
    args: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stderr: IO[str] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """Start ``keyledger dev ARGS``; returns the process and its banner, once it listens.

    It runs in a session of its own, as in a terminal: ``os.killpg`` is a Ctrl-C there.
    """
    process = subprocess.Popen(
        [*KEYLEDGER, "dev", *args],
        env=clean_environment() if env is None else env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if stderr is None else stderr,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    banner = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        banner.append(line)
        if "Press Ctrl-C" in line:
            return process, "".join(banner)
    process.kill()
    process.wait()
    raise AssertionError("keyledger dev did not start:\n" + "".join(banner))


def start_dev(data_dir: Path, port: int) -> tuple[subprocess.Popen[str], str, str]:
    """Start ``keyledger dev``; returns the process, its admin key and the banner's curl."""
    process, text = launch_dev(["--data-dir", str(data_dir), "--port", str(port)])
    found = re.search(r"^(sk_live_\w+)$", text, re.MULTILINE)
    assert found is not None, text
    curl = text[text.index("curl -s") : text.index("Press Ctrl-C")]
    return process, found[1], curl


def stop_dev(process: subprocess.Popen[str]) -> int:
    """Ctrl-C, as a user would; returns the exit code."""
    process.send_signal(signal.SIGINT)
    return process.wait(30)
