"""Revoking many keys of one org at once (incident response), as a pure decision.

A bulk revocation names its keys one of three ways: by id (``NamedKeys``),
every key one actor generated (``CreatedBy``), or every key of the org
(``AllKeys``), optionally within one environment. The shell finds the keys
and folds each one's stream; ``decide_revocations`` then decides every key
with the same ``decide`` as a single ``RevokeKey``, so a bulk revocation does
exactly what a revoke of each key would:

- an active, disabled or expired key gets one ``KeyRevoked``;
- a key already revoked gets nothing (``already_terminal``; the first reason
  stands);
- a key whose events cannot be folded is left alone (``quarantined``): nothing
  can be decided on a state that cannot be read, and verification already
  refuses such a key;
- a named id that is not a key of this org (in that environment, when one is
  given) refuses the whole revocation with 404 ``key_not_found``, naming every
  such id: nothing is written, as for any other refused command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from events.models import KeyEvent
from events.vocabulary import Environment, RevokeReason
from service.domain.commands import RevokeKey
from service.domain.decider import decide
from service.domain.orgs import SYSTEM_ORG
from service.domain.state import KeyState
from service.errors import KeyledgerError

# At most this many ids in one request (``NamedKeys``).
MAX_NAMED_KEYS = 1000
# At most this many keys selected by ``CreatedBy`` or ``AllKeys`` in one transaction: it
# holds the log's append lock while it writes, and every other command waits meanwhile.
MAX_SELECTED_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class NamedKeys:
    """These keys, by id (duplicates count once; the first occurrence sets the order)."""

    key_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CreatedBy:
    """Every key whose ``KeyGenerated`` was recorded with this actor id."""

    actor_id: str


@dataclass(frozen=True, slots=True)
class AllKeys:
    """Every key of the org."""


KeySelection = NamedKeys | CreatedBy | AllKeys


@dataclass(frozen=True, slots=True)
class RevokeKeys:
    """Revoke the selected keys of one org, in one transaction."""

    selection: KeySelection
    reason: RevokeReason
    issued_at: datetime
    environment: Environment | None = None


@dataclass(frozen=True, slots=True)
class UnreadableKey:
    """A key whose stream does not fold (docs/security.md §5), and the org its rows name."""

    org_id: str


@dataclass(frozen=True, slots=True)
class Revocation:
    """One key that gets revoked: the state it was decided against, and its events."""

    state: KeyState
    events: tuple[KeyEvent, ...]


@dataclass(frozen=True, slots=True)
class Revocations:
    """What a bulk revocation decided, key by key, in the selection's order."""

    revoked: tuple[Revocation, ...]
    already_terminal: tuple[str, ...]
    quarantined: tuple[str, ...]


def decide_revocations(
    command: RevokeKeys, org_id: str, keys: Mapping[str, KeyState | UnreadableKey]
) -> Revocations:
    """Decide ``command`` for each of ``keys`` (what each id's stream folds to).

    For ``NamedKeys`` the order is the request's and every named id must be in
    ``keys``, of ``org_id`` and of the command's environment; for a selection
    the shell already found the keys, and ``keys``' order is kept.
    """
    if isinstance(command.selection, NamedKeys):
        order = list(dict.fromkeys(command.selection.key_ids))
        missing = [key_id for key_id in order if not _selectable(keys.get(key_id), org_id, command)]
        if missing:
            raise KeyledgerError(
                "key_not_found",
                f"{len(missing)} of the key ids are not keys of this org"
                + (f" in environment {command.environment}" if command.environment else "")
                + "; nothing was revoked",
                {"missing": missing},
            )
    else:
        order = [key_id for key_id, key in keys.items() if _selectable(key, org_id, command)]
    revoked: list[Revocation] = []
    already_terminal: list[str] = []
    quarantined: list[str] = []
    for key_id in order:
        key = keys[key_id]
        if isinstance(key, UnreadableKey):
            quarantined.append(key_id)
            continue
        events = decide(RevokeKey(key_id, command.reason, command.issued_at), key)
        if events:
            revoked.append(Revocation(key, tuple(events)))
        else:
            already_terminal.append(key_id)
    return Revocations(tuple(revoked), tuple(already_terminal), tuple(quarantined))


def _selectable(key: KeyState | UnreadableKey | None, org_id: str, command: RevokeKeys) -> bool:
    """Whether ``key`` exists for this caller: of ``org_id`` and, when one is given, of the
    command's environment (an unreadable key's environment is unknown: it is kept)."""
    if key is None or key.org_id != org_id:
        return False
    if isinstance(key, UnreadableKey) or command.environment is None:
        return True
    return key.environment == command.environment


def check_selection_size(selected: int) -> None:
    """409 ``too_many_keys`` when a selection takes more keys than one transaction may."""
    if selected > MAX_SELECTED_KEYS:
        raise KeyledgerError(
            "too_many_keys",
            f"the selection takes more than {MAX_SELECTED_KEYS} keys; narrow it with"
            " environment or created_by, or name the keys with key_ids (1000 at a time)",
            {"limit": MAX_SELECTED_KEYS},
        )


def check_selectable_org(org_id: str, selection: NamedKeys | CreatedBy | AllKeys) -> None:
    """422 for ``all`` or ``created_by`` among service keys: one request must not revoke
    every service key at once (the caller's own and every verifier's among them); they are
    revoked by id."""
    if org_id == SYSTEM_ORG and not isinstance(selection, NamedKeys):
        raise KeyledgerError(
            "validation_error",
            "service keys are revoked by id: name them in key_ids",
            [
                {
                    "loc": ["body"],
                    "msg": "all and created_by do not apply to service keys",
                    "type": "service_keys_by_id",
                }
            ],
        )
