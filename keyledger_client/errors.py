"""The errors a keyledger client raises: a refusal by the server, or no answer at all.

Both derive from ``KeyledgerError``, so ``except KeyledgerError`` catches whatever a
call can raise besides a ``ValueError`` for an argument it refused before sending.
Neither ever carries a header value (the service key travels in one).
"""

from __future__ import annotations

from typing import Any


class KeyledgerError(Exception):
    """Anything a keyledger client raises for a call that got no result."""


class KeyledgerAPIError(KeyledgerError):
    """keyledger answered with an error: its HTTP ``status``, stable ``code`` and ``request_id``.

    ``code`` is the server's snake_case error code (``key_not_found``,
    ``validation_error``…), or ``http_<status>`` when the body was not keyledger's
    error shape (a proxy's page, say). ``retry_after`` is the ``Retry-After``
    header in seconds, when the server sent one. For a 422 the text names the
    fields at fault, from ``details``.
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
        super().__init__(f"{status} {code}: {message}{fields_at_fault(details)}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = details
        self.retry_after = retry_after


class KeyledgerTransportError(KeyledgerError):
    """No answer from keyledger: the connection failed, timed out or broke (after the
    ``RetryPolicy``'s attempts), or the request could not be sent at all.

    ``host`` is the host (and port) called, ``cause`` the httpx error's class name
    (``ConnectError``, ``ReadTimeout``, ``LocalProtocolError``…), ``attempts`` how many
    times the call was sent. The httpx error is not chained: its text may quote a header.
    """

    def __init__(self, host: str, cause: str, reason: str, attempts: int) -> None:
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"keyledger at {host} could not be reached{tries}: {cause}: {reason}")
        self.host = host
        self.cause = cause
        self.reason = reason
        self.attempts = attempts


# At most this many fields are named in a 422's text (``details`` has them all).
_FIELDS_NAMED = 3


def fields_at_fault(details: Any) -> str:
    """`` (fields: body.name, query.limit)`` from a 422's ``details``, or nothing."""
    if not isinstance(details, list):
        return ""
    names: list[str] = []
    for problem in details:
        loc = problem.get("loc") if isinstance(problem, dict) else None
        if isinstance(loc, list) and loc:
            name = ".".join(str(part) for part in loc)
            if name not in names:
                names.append(name)
    if not names:
        return ""
    more = f" and {len(names) - _FIELDS_NAMED} more" if len(names) > _FIELDS_NAMED else ""
    return f" (fields: {', '.join(names[:_FIELDS_NAMED])}{more})"
