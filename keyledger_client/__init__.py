"""keyledger's Python client.

- ``KeyledgerClient`` (asyncio) and ``SyncKeyledgerClient``: the HTTP API, one method
  per endpoint, typed results, ``KeyledgerAPIError`` for refusals, ``KeyledgerTransportError`` when
  keyledger cannot be reached (both ``KeyledgerError``).
- ``sign_request``: the headers that sign a request with a signing key.
- ``LocalVerifier``: bearer secrets verified in process; events evict within milliseconds.
- ``keyledger_client.aiohttp`` and ``keyledger_client.asgi`` (FastAPI, Starlette, any ASGI
  app): middlewares protecting a service with it.
- ``keyledger_client.events``: the event models and ``decode``, for subscribers.

It imports nothing of the keyledger service, and installs no generic top-level name.
"""

from keyledger_client.client import KeyledgerClient
from keyledger_client.errors import KeyledgerAPIError, KeyledgerError, KeyledgerTransportError
from keyledger_client.local_verifier import LocalVerifier
from keyledger_client.models import (
    AuthorizeResult,
    BulkRevocation,
    ChainReport,
    CommandResult,
    Delivery,
    Identity,
    IdentityResult,
    Key,
    KeyUsage,
    Me,
    UnreadableEvent,
    UsageBucket,
    UsageRecorded,
    VerifiedKey,
    VerifyResult,
    Webhook,
    WebhookResult,
)
from keyledger_client.retries import RetryPolicy
from keyledger_client.signing import sign_request
from keyledger_client.sync_client import SyncKeyledgerClient

__all__ = [
    "AuthorizeResult",
    "BulkRevocation",
    "ChainReport",
    "CommandResult",
    "Delivery",
    "Identity",
    "IdentityResult",
    "Key",
    "KeyUsage",
    "KeyledgerAPIError",
    "KeyledgerClient",
    "KeyledgerError",
    "KeyledgerTransportError",
    "LocalVerifier",
    "Me",
    "RetryPolicy",
    "SyncKeyledgerClient",
    "UnreadableEvent",
    "UsageBucket",
    "UsageRecorded",
    "VerifiedKey",
    "VerifyResult",
    "Webhook",
    "WebhookResult",
    "sign_request",
]
