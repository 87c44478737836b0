"""The one error type of keyledger.

Everything that refuses a request raises ``KeyledgerError`` with a stable
snake_case code; the HTTP layer maps codes to statuses in one table
(``service.http.errors``). Messages never contain secrets.
"""

from __future__ import annotations

from typing import Any


class KeyledgerError(Exception):
    """A refusal with a stable, documented code."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
