"""The one error a keyledger client raises for a refusal by the server."""

from __future__ import annotations

from typing import Any


class KeyledgerAPIError(Exception):
    """keyledger answered with an error: its HTTP ``status``, stable ``code`` and ``request_id``.

    ``code`` is the server's snake_case error code (``key_not_found``,
    ``validation_error``…), or ``http_<status>`` when the body was not keyledger's
    error shape (a proxy's page, say). ``retry_after`` is the ``Retry-After``
    header in seconds, when the server sent one.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = details
        self.retry_after = retry_after
