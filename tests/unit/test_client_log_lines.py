"""A NATS client's reconnect trouble is one short JSON line, not a traceback."""

from __future__ import annotations

import io
import json
import logging

from service.log_config import library_log_handler


def _line_of(logger_name: str, error: BaseException) -> dict[str, object]:
    """What the library log handler writes for ``error`` logged by ``logger_name``."""
    buffer = io.StringIO()
    logger = logging.getLogger(logger_name)
    handler = library_log_handler(buffer)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise error
        except type(error):
            logger.error("encountered error", exc_info=True)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    [line] = buffer.getvalue().splitlines()
    return dict(json.loads(line))


def test_a_refused_nats_connection_is_one_field_without_a_traceback() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 4999)")
    line = _line_of("nats.aio.client.test", refused)
    assert line["error"] == f"ConnectionRefusedError: {refused}"
    assert "exception" not in line


def test_other_libraries_keep_their_traceback() -> None:
    line = _line_of("aiohttp.server.test", ValueError("unexpected"))
    assert "Traceback" in str(line["exception"])
