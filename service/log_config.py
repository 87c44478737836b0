"""structlog JSON logging with redaction of anything secret (SPEC §8)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"
_SECRET_FIELD = re.compile(
    r"^(key|api_key|secret|.*_secret|secret_.*|private_key|signature|.*_signature|pepper"
    r"|authorization|x-api-signature|x-api-key|x-keyledger-service-key|password)$",
    re.IGNORECASE,
)
# Values that look like a bearer secret or a PEM private key, wherever they hide.
_SECRET_VALUE = re.compile(
    r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY-----[^-]*"
)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_FIELD.match(k) else _scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop secret-named fields, mask secret-looking values."""
    for name, value in list(event_dict.items()):
        if _SECRET_FIELD.match(name):
            event_dict[name] = REDACTED
        else:
            event_dict[name] = _scrub(value)
    return event_dict


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines on ``stream`` (stderr by default), redacted."""
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
