"""structlog JSON logging with redaction of anything secret (docs/security.md §2)."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any, ClassVar, TextIO

import structlog

from service.redaction import REDACTED, redact_text, redact_value

_SECRET_FIELD = re.compile(
    r"^(key|api_key|secret|.*_secret|secret_.*|private_key|signature|.*_signature|pepper"
    r"|authorization|x-api-signature|x-api-key|x-keyledger-service-key|password)$",
    re.IGNORECASE,
)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            redact_value(k): (
                REDACTED if isinstance(k, str) and _SECRET_FIELD.fullmatch(k) else _scrub(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop secret-named fields, mask secret-looking text anywhere."""
    for name, value in list(event_dict.items()):
        if _SECRET_FIELD.fullmatch(name):
            event_dict[name] = REDACTED
        else:
            event_dict[name] = _scrub(value)
    return event_dict


# Writes up to this size to a pipe are never interleaved with other writers' (Linux PIPE_BUF).
_ATOMIC_WRITE = 4096
# With a linger, the lines that are written at once without waiting longer (≈ 4096 bytes).
_LINES_PER_WRITE = 14

# An access line's values: request id, method, route, status, duration (ms), caller key
# id, outcome and the time.time() it ended; formatted only when written (``_AccessLog``).
AccessRecord = tuple[str, str, str, int, float, str | None, str | None, float]


class _AccessLog:
    """Where access lines go (set by ``configure_logging``, off until it runs), and the
    lines not yet written.

    A request only notes its line's values; the lines are formatted, written with
    one ``write`` and flushed once per turn of the event loop (a callback queued
    with the first line of the turn), not one system call per request: under load
    a turn serves tens of requests, and formatting them together, away from the
    request's own code, halves the access line's cost on the verify path. The
    turn's lines are out before the loop next waits for I/O, so before any
    client can read an answer they describe.

    With a ``linger`` (seconds, ``KEYLEDGER_ACCESS_LOG_LINGER_MS``), lines wait
    up to that long for more lines instead, and are written once about 4096
    bytes of them are waiting: on a loop that serves one or two requests a turn
    (uvloop), that saves a write system call per request. A hard kill then loses
    at most ``linger`` of lines; a normal exit writes them (``atexit``).
    """

    stream: ClassVar[TextIO | None] = None
    pending: ClassVar[list[AccessRecord]] = []  # the one shared buffer, by design
    linger: ClassVar[float] = 0.0
    # The queued flush, and the loop it is queued on (a test's loop may be closed since).
    queued: ClassVar[asyncio.Handle | None] = None
    queued_on: ClassVar[asyncio.AbstractEventLoop | None] = None
    queued_soon: ClassVar[bool] = False

    @classmethod
    def note(cls, record: AccessRecord) -> None:
        pending = cls.pending
        pending.append(record)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: write at once
            cls.flush()
            return
        if cls.queued is not None and cls.queued_on is loop:
            if cls.queued_soon or len(pending) < _LINES_PER_WRITE:
                return  # a flush is already queued, soon enough
            cls.queued.cancel()
        if cls.linger and len(pending) < _LINES_PER_WRITE:
            cls.queued, cls.queued_soon = loop.call_later(cls.linger, cls.flush), False
        else:
            cls.queued, cls.queued_soon = loop.call_soon(cls.flush), True
        cls.queued_on = loop

    @classmethod
    def flush(cls) -> None:
        if cls.queued is not None:
            cls.queued.cancel()  # this very call, or a later one made needless
            cls.queued = cls.queued_on = None
        records, cls.pending = cls.pending, []
        stream = cls.stream
        if stream is None or not records:
            return
        # Whole lines, at most PIPE_BUF bytes a write (lines are ASCII: JSON escapes the
        # rest): on a pipe shared by `serve --workers`, no line is cut by another's.
        chunk: list[str] = []
        size = 0
        for record in records:
            line = _access_line(*record)
            if chunk and size + len(line) > _ATOMIC_WRITE:
                stream.write("".join(chunk))
                stream.flush()
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        stream.write("".join(chunk))
        stream.flush()


# The last turn's lines when the process ends before its loop ran the flush.
atexit.register(_AccessLog.flush)

# Routes, methods and service-key ids recur on every request: quote each once.
_QUOTED: dict[str, str] = {}
_QUOTED_MAX = 4096


def _json_text(value: str, recurring: bool = True) -> str:
    """``value`` scrubbed and as a JSON string (memoised when ``recurring``)."""
    quoted = _QUOTED.get(value) if recurring else None
    if quoted is None:
        quoted = json.dumps(redact_text(value))
        if recurring and len(_QUOTED) < _QUOTED_MAX:
            _QUOTED[value] = quoted
    return quoted


class _Clock:
    """The seconds part of the access line's UTC timestamp, formatted once a second."""

    second: ClassVar[int] = -1
    prefix: ClassVar[str] = ""

    @classmethod
    def turn(cls, second: int) -> None:
        """Format ``second`` (a time.time() second) as the current prefix."""
        cls.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        cls.second = second


def log_access(
    request_id: str,
    method: str,
    route: str,
    status: int,
    duration_ms: float,
    caller_key_id: str | None,
    outcome: str | None = None,
) -> None:
    """Note the one access line of a request (written with its turn's lines, ``_AccessLog``).

    One line per request (docs/api.md#logs), whatever the status, in the same
    JSON shape as structlog's; ``outcome``, when given (a verify's verdict
    code), is one more field. Every verify writes one: the request pays for a
    tuple, the formatting is done where the turn's lines are written.
    """
    if _AccessLog.stream is not None:
        _AccessLog.note(
            (request_id, method, route, status, duration_ms, caller_key_id, outcome, time.time())
        )


def _access_line(
    request_id: str,
    method: str,
    route: str,
    status: int,
    duration_ms: float,
    caller_key_id: str | None,
    outcome: str | None,
    now: float,
) -> str:
    """An access line, ended by a newline.

    The fast path of the busiest log line: it skips structlog's processor
    chain and ``json.dumps`` of a dict (≈5× cheaper). Its fields are fixed:
    ``status``/``duration_ms`` are numbers; every string goes through the
    secret-value scrubber (``request_id`` and ``method`` come from the client)
    and is JSON-quoted, recurring ones from a memo.
    """
    fields = _ACCESS_FIELDS.get((method, route, status, caller_key_id, outcome))
    if fields is None:
        fields = _access_fields(method, route, status, caller_key_id, outcome)
    # As it is when nothing in it needs escaping or scrubbing (printable ASCII, no quote
    # or backslash, not secret-shaped), as every id service.http.request_context lets
    # through is; else escaped and scrubbed (the JSON string without its quotes).
    if not (
        request_id.isascii()
        and request_id.isprintable()
        and '"' not in request_id
        and "\\" not in request_id
        and "k_" not in request_id
        and "-----" not in request_id
    ):
        request_id = _json_text(request_id, False)[1:-1]
    second = int(now)
    if second != _Clock.second:
        _Clock.turn(second)
    # Fixed-point formats: no float repr per line, the microseconds truncated as time.time's.
    return (
        f'{{"event": "request", "request_id": "{request_id}", {fields[0]}'
        f'"duration_ms": {duration_ms:.3f}, {fields[1]}'
        f'"timestamp": "{_Clock.prefix}.{int((now - second) * 1_000_000):06d}Z"}}\n'
    )


# The access line's fields before and after ``duration_ms``, by (method, route, status,
# caller, outcome): the same few combinations recur on every request, rendered once.
_ACCESS_FIELDS: dict[tuple[str, str, int, str | None, str | None], tuple[str, str]] = {}


def _access_fields(
    method: str, route: str, status: int, caller_key_id: str | None, outcome: str | None
) -> tuple[str, str]:
    caller = "null" if caller_key_id is None else _json_text(caller_key_id)
    extra = "" if outcome is None else f'"outcome": {_json_text(outcome)}, '
    fields = (
        f'"method": {_json_text(method)}, "route": {_json_text(route)}, "status": {int(status)}, ',
        f'"caller_key_id": {caller}, {extra}"level": "info", ',
    )
    if len(_ACCESS_FIELDS) < _QUOTED_MAX:
        _ACCESS_FIELDS[(method, route, status, caller_key_id, outcome)] = fields
    return fields


class _LibraryLogHandler(logging.StreamHandler[TextIO]):
    """Where the warnings of libraries (aiohttp, asyncpg, nats) go: see ``configure_logging``."""


def _brief_client_errors(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A NATS client's connection trouble as one ``error`` field, not a traceback.

    nats-py logs every failed (re)connect with its traceback; while a server
    is away that is an expected, repeated event, and the operator needs its
    kind and address, not forty lines of asyncio frames.
    """
    exc_info = event_dict.get("exc_info")
    if str(event_dict.get("logger", "")).startswith("nats") and exc_info:
        error = exc_info[1] if isinstance(exc_info, tuple) else exc_info
        if isinstance(error, BaseException):
            event_dict.pop("exc_info")
            event_dict["error"] = f"{type(error).__name__}: {error}"
    return event_dict


def library_log_handler(stream: TextIO) -> logging.Handler:
    """Warnings and errors of ``logging`` users, as redacted JSON lines on ``stream``."""
    handler = _LibraryLogHandler(stream)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _brief_client_errors,
                structlog.processors.format_exc_info,
                redact,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    return handler


def configure_logging(
    level: str = "info", stream: TextIO | None = None, access_log_linger: float = 0.0
) -> None:
    """JSON lines on ``stream`` (stderr by default), redacted.

    ``access_log_linger``: seconds an access line may wait to be written with others
    (``_AccessLog``); 0, at the end of its event-loop turn.

    Library loggers (``logging``) go there too, as the same JSON lines through
    the same redaction: aiohttp, for one, logs a malformed request together
    with its offending line, which may hold a secret.
    """
    enabled = logging.getLevelNamesMapping().get(level.upper(), logging.INFO) <= logging.INFO
    _AccessLog.flush()  # lines of the old configuration go where it said
    _AccessLog.stream = (stream or sys.stderr) if enabled else None
    _AccessLog.linger = access_log_linger
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _LibraryLogHandler)]:
        root.removeHandler(handler)
    root.addHandler(library_log_handler(stream or sys.stderr))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
