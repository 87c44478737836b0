"""Secret-shaped text is never repeated: one scrubber for error bodies and log lines.

No error message, error detail or log line repeats a string that looks like a
keyledger secret, wherever the client put it (a query parameter's name or
value, an unknown body field's name, a metadata key, a header); see
docs/security.md §2. The shapes are a bearer secret (``sk_``/``rk_`` +
``live``/``test`` + ``_`` + the base62 body that ``service.domain.key_material``
makes; from 20 characters on, so a truncated or mistyped secret is hidden too)
and a PEM private key. Key hints (12 characters + ``…`` + 4) stay readable.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"
SECRET_TEXT = re.compile(
    r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY-----[^-]*"
)


def redact_text(text: str) -> str:
    """``text`` with every secret-shaped substring replaced by ``[redacted]``."""
    # Both shapes contain "k_" (sk_/rk_) or "-----": a substring test skips the regex.
    if "k_" not in text and "-----" not in text:
        return text
    return SECRET_TEXT.sub(REDACTED, text)


def looks_like_secret(text: str) -> bool:
    """Whether ``text`` holds a secret-shaped substring (it must not be stored or echoed)."""
    return redact_text(text) != text


def redact_value(value: Any) -> Any:
    """A JSON-like value with secret-shaped text redacted in every string, keys included."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            (redact_text(k) if isinstance(k, str) else k): redact_value(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value
