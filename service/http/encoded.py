"""Answers encoded ahead of time, written in one piece: the verify routes' responses.

The verify routes answer the same few bodies over and over (one per verdict
and key entry). ``EncodedJson`` is such a body encoded once and left open
at its end, so that per-request fields (``retry_after`` today, a remaining
quota tomorrow) are appended to it without encoding the rest again.

``EncodedResponse`` writes the status line, the headers and the body with one
transport write. It skips aiohttp's per-response header work (a
``CIMultiDict`` filled with defaults, checked and serialised for every
response): the status line and the fixed headers are bytes made once, the
``Date``/``Server`` pair once a second. Headers added to it after it is made
(the request id ``in_context`` sets, a route's ``X-Keyledger-*``) are still
sent, checked as aiohttp checks them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict, CIMultiDictProxy

JSON_CONTENT_TYPE = b"Content-Type: application/json; charset=utf-8\r\n"
# What aiohttp refuses in a header name or value (a response-splitting guard).
_UNSAFE_HEADER_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_LINES: dict[tuple[HttpVersion, int], bytes] = {}
# The header map of the answers made without headers, until one is asked for: empty,
# read-only (a write that missed ``EncodedResponse.headers`` fails, it is not shared).
_NO_HEADERS = CIMultiDictProxy(CIMultiDict[str]())


class EncodedJson(NamedTuple):
    """A JSON object encoded once (as ``json.dumps`` writes it), without its closing brace."""

    opening: bytes

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> EncodedJson:
        """``value`` encoded; it must have at least one field."""
        text = json.dumps(value)
        if not value or not text.endswith("}"):
            raise ValueError("an encoded answer is a JSON object with at least one field")
        return cls(text[:-1].encode())

    def body(self, fields: Mapping[str, Any] | None = None) -> bytes:
        """The object's bytes, with ``fields`` (per-request values) appended at its end."""
        if not fields:
            return self.opening + b"}"
        # '{"retry_after": 3}' without its "{": the fields and the closing brace.
        return b"".join((self.opening, b", ", json.dumps(fields)[1:].encode()))


class _HttpDate:
    """``Date`` and ``Server`` header lines, formatted once a second."""

    second = -1
    lines = b""

    @classmethod
    def current(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.lines = f"Date: {rfc822_formatted_time()}\r\nServer: {SERVER_SOFTWARE}\r\n".encode()
            cls.second = second
        return cls.lines


def _status_line(version: HttpVersion, status: int, reason: str) -> bytes:
    line = _STATUS_LINES.get((version, status))
    if line is None:
        line = f"HTTP/{version.major}.{version.minor} {status} {reason}\r\n".encode()
        _STATUS_LINES[(version, status)] = line
    return line


def header_lines(headers: Mapping[str, str]) -> bytes:
    """``headers`` as HTTP header lines, refused as aiohttp refuses control characters."""
    lines = []
    for name, value in headers.items():
        if _UNSAFE_HEADER_TEXT.search(name) or _UNSAFE_HEADER_TEXT.search(value):
            raise ValueError(f"header {name!r} holds a control character")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode()


class EncodedResponse(web.StreamResponse):
    """A JSON response from ready bytes, sent with one write (see the module's docstring)."""

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        head: bytes = b"",
    ) -> None:
        """``head``: more header lines, made by ``header_lines`` (and so checked) beforehand."""
        if headers is None and status == 200:
            # What StreamResponse.__init__ sets (aiohttp is pinned), without a header map
            # made for each answer nor a status lookup, ≈ 0.35 µs of every verify: the
            # usual answer has no header of its own (``headers`` makes one when asked).
            self._state = {}
            self._headers = _NO_HEADERS  # type: ignore[assignment]  # replaced before a write
            self._status, self._reason = 200, "OK"
        else:
            super().__init__(status=status, headers=headers)
        self.encoded_body = body
        self.head = head
        # ``X-Request-Id``, set by ``in_context``: an id it generated or checked
        # (``REQUEST_ID``: letters, digits and ``._:-``), so written without a header map.
        self.request_id: str | None = None

    @property
    def headers(self) -> CIMultiDict[str]:
        """The answer's own headers (a map of its own from the first time they are asked for)."""
        if self._headers is _NO_HEADERS:
            self._headers = CIMultiDict()
        return self._headers

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        """As ``StreamResponse.prepare``, but the head is written with the body (``write_eof``)."""
        if self._eof_sent:
            return None
        if self._payload_writer is not None:
            return self._payload_writer
        self._req = request
        self._payload_writer = request._payload_writer
        if self._keep_alive is None:
            self._keep_alive = request.keep_alive
        await request._prepare_hook(self)  # the app's on_response_prepare, as aiohttp runs it
        return self._payload_writer

    async def write_eof(self, data: bytes = b"") -> None:
        """Write status line, headers and body at once, and end the response."""
        if self._eof_sent:
            return
        request, writer = self._req, self._payload_writer
        assert request is not None and writer is not None, "prepare() comes first"
        body = self.encoded_body if not data else self.encoded_body + data
        version = request.version
        parts = [
            _status_line(version, self.status, self.reason),
            JSON_CONTENT_TYPE,
            b"Content-Length: %d\r\n" % len(body),
            _HttpDate.current(),
        ]
        if self.head:
            parts.append(self.head)
        if self._headers:
            parts.append(header_lines(self._headers))
        if self.request_id is not None:
            if _UNSAFE_HEADER_TEXT.search(self.request_id):
                raise ValueError("the request id holds a control character")
            parts.append(b"X-Request-Id: %s\r\n" % self.request_id.encode())
        if not self._keep_alive:
            if version >= (1, 1):
                parts.append(b"Connection: close\r\n")
        elif version == (1, 0):
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if request.method != "HEAD":
            parts.append(body)
        # The whole answer as write_eof's last chunk: one call (and one drain) instead of two.
        await writer.write_eof(b"".join(parts))
        self._eof_sent = True
        self._req = None
        self._body_length = writer.output_size
        self._payload_writer = None
