"""The identity use cases: configure an identity (``PUT``) and read it (``GET``).

An identity's events go into the one log, in a transaction of their own
under the log's append lock (as a bulk revocation does, ``service.key_revocations``):
the same bounded wait, the same re-check of the calling service key, the
same truncation guards, the same ``Idempotency-Key`` memory and the same
answer to a database that fails (503, nothing written). After the commit the
event reaches this replica's index before the answer leaves; the other
replicas hear it from the log like any event.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from events.codec import format_timestamp
from events.models import (
    Envelope,
    IdentityConfigured,
    LogEvent,
    NamedRateLimit,
    identity_stream_id,
)
from service.clock import utc_now
from service.domain.identities import (
    ConfigureIdentity,
    IdentityState,
    decide_identity,
    evolve_identity,
)
from service.errors import KeyledgerError
from service.store.event_rows import UnfoldableStream, fold_own_stream, seal_after
from service.store.event_store import LogHead
from service.store.idempotency import StoredAnswer

if TYPE_CHECKING:
    import asyncpg

    from service.key_commands import KeyCommandHandler
    from service.key_lifecycle import Issuer


@dataclass(frozen=True, slots=True)
class IdentityOutcome:
    """What configuring an identity did: the identity as it now is, and the log position."""

    identity: dict[str, Any]
    position: int
    created: bool
    replayed: bool = False

    def answer(self) -> dict[str, Any]:
        """The answer as callers get it."""
        body: dict[str, Any] = {"identity": self.identity, "position": self.position}
        if self.replayed:
            body["replayed"] = True
        return body


def render_identity(state: IdentityState) -> dict[str, Any]:
    """The identity as callers see it."""
    return {
        "id": state.identity_id,
        "org_id": state.org_id,
        "rate_limits": [limit.model_dump() for limit in state.rate_limits],
        "metadata": state.metadata,
        "created_at": format_timestamp(state.created_at),
        "updated_at": format_timestamp(state.updated_at),
        "version": state.version,
    }


def fold_identity_stream(
    envelopes: list[Envelope], state: IdentityState | None = None
) -> IdentityState | None:
    """An identity's state after ``envelopes`` of its stream (from ``state``), its
    ``position`` the last one's; ``UnfoldableStream`` if one does not apply."""
    state = fold_own_stream(envelopes, _evolve, state)
    if state is not None and envelopes:
        state = replace(state, position=envelopes[-1].position)
    return state


def _evolve(state: IdentityState | None, event: LogEvent) -> IdentityState:
    if not isinstance(event, IdentityConfigured):
        raise ValueError(f"{event.event_type} in an identity's stream")
    return evolve_identity(state, event)


class Identities:
    """Configure and read identities through ``handler``'s pool and log."""

    def __init__(self, handler: KeyCommandHandler) -> None:
        self.handler = handler

    async def configure(
        self,
        issuer: Issuer,
        identity_id: str,
        rate_limits: tuple[NamedRateLimit, ...],
        metadata: dict[str, Any],
    ) -> IdentityOutcome:
        """Set the identity's shared limits and metadata; its outcome once committed."""
        command = ConfigureIdentity(
            issuer.org_id, identity_id, utc_now(), tuple(rate_limits), dict(metadata)
        )
        record = functools.partial(self._record, issuer, command)
        return await self.handler.append_alone(issuer.caller, command.issued_at, record)

    async def _record(
        self,
        issuer: Issuer,
        command: ConfigureIdentity,
        conn: asyncpg.Connection,
        head: LogHead,
    ) -> tuple[IdentityOutcome, list[Envelope]]:
        handler = self.handler
        idempotent = issuer.idempotent
        if idempotent is not None:
            stored = await handler.idempotency.find_answer(conn, issuer.actor.id, idempotent.key)
            if stored is not None:
                return _replay(stored, idempotent.fingerprint), []
        state = await self._state(conn, command.org_id, command.identity_id)
        if issuer.if_match is not None and (state is None or state.version != issuer.if_match):
            raise KeyledgerError(
                "version_mismatch",
                "the identity has changed since the version given in If-Match",
                {"current_version": state.version if state else None},
            )
        events = decide_identity(command, state)
        sealed = seal_after(
            events,
            actor=issuer.actor,
            expected_version=state.version if state else 0,
            position=head.position,
            previous_hash=head.hash,
        )
        if sealed:
            await handler.store.insert_sealed(conn, sealed)
            state = fold_identity_stream(sealed, state)
        assert state is not None  # a first configuration always writes its event
        outcome = IdentityOutcome(
            render_identity(state),
            state.position or head.position,
            created=bool(sealed) and state.version == 1,
        )
        if idempotent is not None:
            status = 201 if outcome.created else 200
            answer = StoredAnswer(idempotent.fingerprint, status, outcome.answer())
            await handler.idempotency.remember_answer(conn, issuer.actor.id, idempotent.key, answer)
        return outcome, sealed

    async def _state(
        self, conn: asyncpg.Connection, org_id: str, identity_id: str
    ) -> IdentityState | None:
        stream_id = identity_stream_id(org_id, identity_id)
        try:
            return fold_identity_stream(await self.handler.store.load_stream(conn, stream_id))
        except UnfoldableStream as exc:
            raise KeyledgerError(
                "identity_quarantined",
                "this identity's events cannot be read; it takes no changes",
                {"position": exc.position},
            ) from None

    async def get(self, org_id: str, identity_id: str) -> dict[str, Any]:
        """The identity as it is now (404 ``identity_not_found`` if never configured)."""
        async with self.handler.pool.acquire() as conn:
            state = await self._state(conn, org_id, identity_id)
        if state is None:
            raise KeyledgerError("identity_not_found", "no such identity")
        return render_identity(state)


def _replay(stored: StoredAnswer, fingerprint: str) -> IdentityOutcome:
    answer = stored.replayed(fingerprint, "identity")
    return IdentityOutcome(
        answer["identity"], answer["position"], created=stored.status == 201, replayed=True
    )
