"""Load from ``wrk`` in a process of its own, and the CPU time a server spent on it.

Requests/s alone is noisy on a shared machine; the server's CPU time per
request (utime + stime from ``/proc/<pid>/stat``, read before and after the
run) is far steadier, so every run reports both.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONNECTIONS = 32
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Load:
    """What one wrk run measured, and the server CPU it cost."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_seconds: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / max(1, self.requests) * 1e6

    def row(self, name: str, baseline: Load | None) -> str:
        """A Markdown row: name, req/s, p50, p99, CPU µs/request, and both ratios to
        ``baseline`` (requests/s, and its CPU per request over this one's)."""
        if baseline is None:
            ratios = "1.00 | 1.00"
        else:
            ratios = (
                f"{self.rps / baseline.rps:.2f}"
                f" | {baseline.cpu_us_per_request / self.cpu_us_per_request:.2f}"
            )
        return (
            f"| {name} | {self.rps:.0f} | {self.p50_ms:.2f} | {self.p99_ms:.2f}"
            f" | {self.cpu_us_per_request:.0f} | {ratios} |"
        )


TABLE_HEAD = [
    "| target | requests/s | p50 ms | p99 ms | server CPU µs/request"
    " | × bare (req/s) | × bare (CPU) |",
    "|---|---:|---:|---:|---:|---:|---:|",
]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def process_tree(pids: Sequence[int]) -> list[int]:
    """``pids`` and all their descendants alive now (the workers of ``serve --workers``)."""
    found: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            todo.extend(int(child) for child in task.read_text().split())
    return found


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def lua_script(
    method: str = "POST",
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    bodies: Sequence[dict[str, Any]] = (),
) -> str:
    """A wrk script: one request repeated, or (``bodies``) a POST of each body in turn."""
    lines = [f'wrk.method = "{method}"']
    for name, value in (headers or {}).items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    if method == "POST":
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(json.dumps(body))}")
    if bodies:
        quoted = ",\n".join(json.dumps(json.dumps(b)) for b in bodies)
        lines += [
            f"local bodies = {{\n{quoted}\n}}",
            "local n = 0",
            "request = function()",
            "  n = n % #bodies + 1",
            "  return wrk.format(nil, nil, nil, bodies[n])",
            "end",
        ]
    return "\n".join(lines) + "\n"


async def run_wrk(url: str, script: str, seconds: int, server_pids: Sequence[int]) -> Load:
    """``wrk -t1 -c32 -d<seconds>s --latency`` against ``url``; refuses non-2xx answers."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        before = cpu_seconds(server_pids)
        process = await asyncio.create_subprocess_exec(
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            file.name,
            url,
            stdout=asyncio.subprocess.PIPE,
        )
        output = (await process.communicate())[0].decode()
        used = cpu_seconds(server_pids) - before
    finally:
        os.unlink(file.name)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        raise RuntimeError(f"wrk saw {non_2xx[1]} error responses:\n{output}")

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        assert match, output
        return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]

    requests = re.search(r"(\d+) requests in", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert requests and rps, output
    return Load(int(requests[1]), float(rps[1]), latency("50"), latency("99"), used)
