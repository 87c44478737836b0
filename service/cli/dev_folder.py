"""The data folder of ``keyledger dev``: its lock, its URLs, its pepper and its admin key.

A running ``keyledger dev`` holds an exclusive ``flock`` on ``dev.lock``
(which names its pid and URL), so a second one on the same folder stops
before it touches anything. While it runs, ``dev.json`` holds its URLs; the
other commands and ``examples/revocation_listener.py`` read it (and the
``pepper`` file) when the ``KEYLEDGER_*`` settings are unset.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from service.cli.failures import UsageError

LOCK = "dev.lock"
URLS = "dev.json"
PEPPER = "pepper"
ADMIN_KEY = "admin-key"
# The embedded servers' pids while a dev runs (so a dev that died is cleaned up after).
SERVERS = "servers.json"
# The port the embedded NATS had last: reused when free, so pasted exports stay true.
NATS_PORT = "nats-port"


def _private_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, replacing it at once."""
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(partial, 0o600)
    os.replace(partial, path)


@contextlib.contextmanager
def held(data_dir: Path, url: str) -> Iterator[None]:
    """Hold the folder's dev lock while the block runs; ``UsageError`` when another holds it."""
    created = not data_dir.exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        handle: IO[str] = open(data_dir / LOCK, "a+")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise UsageError(
            f"cannot use {data_dir} as the dev data folder ({exc.strerror or exc}):"
            " choose another with --data-dir or KEYLEDGER_DATA_DIR"
        ) from exc
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(data_dir)
            raise UsageError(
                f"keyledger dev is already running here (pid {holder.get('pid', '?')},"
                f" {holder.get('url', '?')}); stop it, or use another --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "url": url}) + "\n")
        handle.flush()
        try:
            yield
        except Exception:
            if created:
                # A dev that refused to start leaves no folder behind it made for nothing.
                _remove_if_only_lock(data_dir)
            raise
        finally:
            (data_dir / URLS).unlink(missing_ok=True)
    finally:
        handle.close()


def _remove_if_only_lock(data_dir: Path) -> None:
    with contextlib.suppress(OSError):
        if [path.name for path in data_dir.iterdir()] == [LOCK]:
            (data_dir / LOCK).unlink()
            data_dir.rmdir()


def _holder(data_dir: Path) -> dict[str, object]:
    try:
        found = json.loads((data_dir / LOCK).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def running(data_dir: Path) -> bool:
    """True when a ``keyledger dev`` holds this folder's lock right now."""
    try:
        handle = open(data_dir / LOCK)  # noqa: SIM115 - closed below
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def write_urls(data_dir: Path, urls: dict[str, str | None]) -> None:
    """Record a running dev's URLs: database, NATS, API, and the stream's name."""
    _private_write(data_dir / URLS, json.dumps(urls, indent=2) + "\n")


def read_urls(data_dir: Path) -> dict[str, str]:
    """The URLs of the ``keyledger dev`` running on ``data_dir``; empty when none runs."""
    if not running(data_dir):
        return {}
    try:
        found = json.loads((data_dir / URLS).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)}


def record_servers(data_dir: Path, pids: dict[str, int]) -> None:
    """Note the embedded servers' pids (``{}``: none runs any more)."""
    if pids:
        _private_write(data_dir / SERVERS, json.dumps(pids) + "\n")
    else:
        (data_dir / SERVERS).unlink(missing_ok=True)


def recorded_servers(data_dir: Path) -> dict[str, int]:
    """The pids noted by :func:`record_servers`; a dev that died left them behind."""
    try:
        found = json.loads((data_dir / SERVERS).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, int)}


def nats_port(data_dir: Path) -> int | None:
    """The port the embedded NATS of this folder had last, if any."""
    try:
        port = int((data_dir / NATS_PORT).read_text().strip())
    except (OSError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def remember_nats_port(data_dir: Path, port: int) -> None:
    """Keep the embedded NATS's port for the next start."""
    _private_write(data_dir / NATS_PORT, f"{port}\n")


def pepper(data_dir: Path, *, create: bool = False) -> str | None:
    """The dev pepper, made once (when ``create``) and kept: the stored hashes depend on it."""
    path = data_dir / PEPPER
    if not path.exists():
        if not create:
            return None
        _private_write(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def stored_admin_key(data_dir: Path) -> str | None:
    """The dev admin key kept from an earlier start, if any."""
    path = data_dir / ADMIN_KEY
    if not path.exists():
        return None
    return path.read_text().strip() or None


def store_admin_key(data_dir: Path, secret: str) -> None:
    """Keep the dev admin key (owner-only) so the next start reuses it."""
    _private_write(data_dir / ADMIN_KEY, secret + "\n")
