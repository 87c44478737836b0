"""Leak reports from secret scanners, in GitHub's secret-scanning partner format.

GitHub (or another scanner speaking its format) POSTs a JSON array of
``{"token", "type", "url", "source"}`` found in public places, signed with
ECDSA P-256 over the raw body; the signature is the report's only
authentication. Each token is answered ``true_positive`` (a keyledger secret
of a key that exists) or ``false_positive``; a token failing the format or
checksum is answered without any lookup. A live key is revoked (reason
``leaked``), or disabled, or only reported, per ``KEYLEDGER_LEAK_ACTION``,
with the URL where it was found in the event. A report sent again changes
nothing: the key is already revoked (or disabled).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

import asyncpg
import structlog
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from events.models import Actor
from service.clock import utc_now
from service.domain.commands import DisableKey, RevokeKey
from service.domain.key_material import is_well_formed, secret_hash
from service.errors import KeyledgerError
from service.key_commands import KeyCommandHandler
from service.redaction import redact_text
from service.store.key_registry import KeyRegistry

LEAK_ACTOR_ID = "keyledger:leak-report"
MAX_ENTRIES = 1000
# A report's own body limit: 1000 entries as GitHub sends them (a URL to a
# file at a commit, ~200-300 bytes each) are far over the API's 64 KiB.
MAX_REPORT_BYTES = 1024 * 1024
Label = Literal["true_positive", "false_positive"]
LeakAction = Literal["revoke", "disable", "report"]

log = structlog.get_logger(__name__)


class LeakEntry(BaseModel):
    """One token a scanner found. Fields a scanner may add later are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    token: Annotated[StrictStr, Field(max_length=4096)]
    type: Annotated[StrictStr, Field(max_length=255)]
    url: Annotated[StrictStr, Field(max_length=2048)] | None = None
    source: Annotated[StrictStr, Field(max_length=255)] | None = None


class LeakReport(RootModel[list[LeakEntry]]):
    """A report: the tokens a scanner found (for ``/openapi.json``)."""


_REPORT = TypeAdapter(list[LeakEntry])


class ScannerKeys(BaseModel):
    """The scanner's published public keys (GitHub's JSON), as read from the settings' file."""

    model_config = ConfigDict(extra="ignore")

    class PublicKey(BaseModel):
        model_config = ConfigDict(extra="ignore")
        key_identifier: str
        key: str
        is_current: bool = True

    public_keys: list[PublicKey]


def _unauthenticated(message: str) -> KeyledgerError:
    return KeyledgerError("invalid_signature", message)


def check_signature(
    keys_file: Path, body: bytes, key_id: str | None, signature: str | None
) -> None:
    """Pass if ``signature`` (base64 DER ECDSA) signs ``body`` under the key ``key_id``;
    401 ``invalid_signature`` otherwise. Keys are read on each report, so a key the scanner
    adds or rotates in the file is taken at once."""
    if not key_id or not signature:
        raise _unauthenticated("a leak report must be signed (GitHub-Public-Key-* headers)")
    try:
        published = ScannerKeys.model_validate_json(keys_file.read_bytes())
    except (OSError, ValidationError) as exc:
        log.error("leak_report_keys_unreadable", error=exc.__class__.__name__)
        raise KeyledgerError("unavailable", "the scanners' public keys cannot be read") from None
    pem = next((k.key for k in published.public_keys if k.key_identifier == key_id), None)
    if pem is None:
        raise _unauthenticated("unknown public key identifier")
    public_key = _published_key(key_id, pem)
    try:
        public_key.verify(
            base64.b64decode(signature, validate=True), body, ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise _unauthenticated("the leak report's signature does not verify") from None


def _published_key(key_identifier: str, pem: str) -> ec.EllipticCurvePublicKey:
    """The ECDSA P-256 key the keys file publishes as ``pem``; 503 ``unavailable`` if it is not.

    A key that cannot be read is the file's fault, not the report's: answered
    and logged like an unreadable file (the identifier, never the key), so the
    operator sees why every report fails instead of a silent 401.
    """
    try:
        public_key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, UnsupportedAlgorithm, TypeError):
        public_key = None
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        log.error(
            "leak_report_keys_unreadable",
            key_identifier=key_identifier,
            error="not a PEM ECDSA P-256 public key",
        )
        raise KeyledgerError("unavailable", "the scanners' public keys cannot be read")
    return public_key


def parse_report(body: bytes) -> list[LeakEntry]:
    """The report's entries; 422 ``validation_error`` for anything but an array of entries."""
    try:
        entries = _REPORT.validate_json(body)
    except ValidationError as exc:
        raise KeyledgerError(
            "validation_error",
            "a leak report is a JSON array of {token, type, url, source}",
            [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_input=False)][
                :20
            ],
        ) from None
    if len(entries) > MAX_ENTRIES:
        raise KeyledgerError("validation_error", f"at most {MAX_ENTRIES} tokens per report")
    return entries


class LeakReports:
    """Labels reported tokens and acts on the keys they belong to."""

    def __init__(
        self, pool: asyncpg.Pool, commands: KeyCommandHandler, pepper: bytes, action: LeakAction
    ) -> None:
        self.pool = pool
        self.commands = commands
        self.pepper = pepper
        self.action = action
        self.registry = KeyRegistry()

    async def handle(self, entries: list[LeakEntry], request_id: str) -> list[dict[str, Any]]:
        """GitHub's answer: one ``{token_hash, token_type, label}`` per entry, in order.

        ``request_id``: the report's, in the actor of every event it causes and its log lines.
        """
        answers = []
        actor = Actor(id=LEAK_ACTOR_ID, request_id=request_id)
        for entry in entries:
            label: Label = "false_positive"
            # Format and checksum first: garbage never reaches the database.
            if is_well_formed(entry.token):
                label = await self._act(entry, actor)
            answers.append(
                {
                    "token_hash": hashlib.sha256(entry.token.encode()).hexdigest(),
                    "token_type": entry.type,
                    "label": label,
                }
            )
        return answers

    async def _act(self, entry: LeakEntry, actor: Actor) -> Label:
        async with self.pool.acquire() as conn:
            key_id = await self.registry.find_by_secret_hash(
                conn, secret_hash(self.pepper, entry.token), utc_now()
            )
            org_id = (
                await conn.fetchval("SELECT org_id FROM key_registry WHERE key_id = $1", key_id)
                if key_id
                else None
            )
        if key_id is None or org_id is None:
            return "false_positive"
        url = _storable_url(entry.url)
        log.warning(
            "leak_reported",
            key_id=key_id,
            org_id=org_id,
            action=self.action,
            request_id=actor.request_id,
        )
        now = utc_now()
        command: RevokeKey | DisableKey | None = None
        if self.action == "revoke":
            command = RevokeKey(key_id=key_id, reason="leaked", issued_at=now, leak_url=url)
        elif self.action == "disable":
            command = DisableKey(key_id=key_id, issued_at=now, reason="leaked", leak_url=url)
        if command is not None:
            try:
                await self.commands.handle(command, org_id=org_id, actor=actor)
            except KeyledgerError as exc:
                # Already expired (disable refused) or set aside: still a real leaked key.
                log.warning(
                    "leak_action_refused",
                    key_id=key_id,
                    code=exc.code,
                    request_id=actor.request_id,
                )
        return "true_positive"


def _storable_url(url: str | None) -> str | None:
    """The URL as the event keeps it: printable ASCII only (else left out), no secret in it."""
    if url is None or not url.isascii() or not url.isprintable():
        return None
    return redact_text(url)
