"""Bulk revocation as a pure decision (``service.domain.bulk_revocation``), given / when / then.

``given`` holds what each key's stream folds to; ``when`` decides a bulk
revocation against them; ``then`` names, key by key, what became of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from events.models import KeyDisabled, KeyEvent, KeyExpired, KeyGenerated, KeyRevoked
from events.vocabulary import Environment
from service.domain.bulk_revocation import (
    MAX_SELECTED_KEYS,
    AllKeys,
    CreatedBy,
    KeySelection,
    NamedKeys,
    Revocations,
    RevokeKeys,
    UnreadableKey,
    check_selection_size,
    decide_revocations,
)
from service.domain.decider import fold
from service.domain.state import KeyState
from service.errors import KeyledgerError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
ORG = "acme"


def key(number: int) -> str:
    return f"key_01JBZ8Q6S1T8YQ4Y4W1S3M5N{number:02d}"


def history(
    key_id: str,
    *later: str,
    org: str = ORG,
    environment: Environment = "live",
    expires_at: datetime | None = None,
) -> KeyState:
    """A key generated at T0, then ``later`` of "disabled", "expired", "revoked"."""
    events: list[KeyEvent] = [
        KeyGenerated(
            key_id=key_id,
            org_id=org,
            occurred_at=T0,
            name="k",
            type="secret",
            environment=environment,
            secret_hash="a" * 64,
            expires_at=expires_at,
        )
    ]
    base = {"key_id": key_id, "org_id": org, "occurred_at": T0}
    for step in later:
        if step == "disabled":
            events.append(KeyDisabled(**base, reason=None))
        elif step == "expired":
            events.append(KeyExpired(**base, expires_at=T0))
        elif step == "revoked":
            events.append(KeyRevoked(**base, reason="unused"))
    state = fold(events)
    assert state is not None
    return state


def given(*keys: tuple[str, KeyState | UnreadableKey]) -> Given:
    """The keys the shell found, in its order, and what each stream folds to."""
    return Given(dict(keys))


@dataclass(frozen=True)
class Given:
    keys: dict[str, KeyState | UnreadableKey]

    def when(self, selection: KeySelection, environment: Environment | None = None) -> When:
        """A bulk revocation (reason ``leaked``, at T1) of ``selection`` in org ``acme``."""
        return When(self.keys, RevokeKeys(selection, "leaked", T1, environment))


@dataclass(frozen=True)
class When:
    keys: dict[str, KeyState | UnreadableKey]
    command: RevokeKeys

    def _decide(self) -> Revocations:
        return decide_revocations(self.command, ORG, self.keys)

    def then(
        self,
        revoked: list[str],
        already_terminal: list[str] = [],  # noqa: B006 - never mutated
        quarantined: list[str] = [],  # noqa: B006
    ) -> Revocations:
        """Exactly these keys get a ``KeyRevoked`` (at T1, reason ``leaked``), these are
        already revoked, these cannot be read; returns the decision."""
        decided = self._decide()
        assert [r.state.key_id for r in decided.revoked] == revoked
        assert list(decided.already_terminal) == already_terminal
        assert list(decided.quarantined) == quarantined
        for revocation in decided.revoked:
            state = revocation.state
            assert revocation.events == (
                KeyRevoked(key_id=state.key_id, org_id=ORG, occurred_at=T1, reason="leaked"),
            )
        return decided

    def then_refused(self, code: str) -> KeyledgerError:
        """Nothing is decided: the whole revocation is refused with ``code``."""
        with pytest.raises(KeyledgerError) as caught:
            self._decide()
        assert caught.value.code == code
        return caught.value


def test_every_named_key_still_revocable_is_revoked_and_the_revoked_ones_are_left() -> None:
    given(
        (key(1), history(key(1))),
        (key(2), history(key(2), "disabled")),
        (key(3), history(key(3), "revoked")),
        (key(4), history(key(4), "expired")),
        # Past expires_at with no KeyExpired yet: revoked, as a single revoke would.
        (key(5), history(key(5), expires_at=T0)),
    ).when(NamedKeys((key(1), key(2), key(3), key(4), key(5)))).then(
        revoked=[key(1), key(2), key(4), key(5)], already_terminal=[key(3)]
    )


def test_named_keys_keep_the_request_order_and_count_once() -> None:
    given((key(1), history(key(1))), (key(2), history(key(2)))).when(
        NamedKeys((key(2), key(1), key(2)))
    ).then(revoked=[key(2), key(1)])


def test_a_named_id_that_is_no_key_of_the_org_refuses_everything_naming_each() -> None:
    error = (
        given(
            (key(1), history(key(1))),
            (key(2), history(key(2), org="beta")),
            (key(4), UnreadableKey("beta")),
        )
        .when(NamedKeys((key(1), key(2), key(3), key(4))))
        .then_refused("key_not_found")
    )
    # Another org's key is not found, exactly like an unknown id: nothing tells them apart.
    assert error.details == {"missing": [key(2), key(3), key(4)]}


def test_a_named_key_of_another_environment_is_not_found_in_that_environment() -> None:
    error = (
        given((key(1), history(key(1), environment="test")), (key(2), history(key(2))))
        .when(NamedKeys((key(1), key(2))), environment="live")
        .then_refused("key_not_found")
    )
    assert error.details == {"missing": [key(1)]}


def test_a_key_whose_stream_does_not_fold_is_left_alone_and_named() -> None:
    given((key(1), UnreadableKey(ORG)), (key(2), history(key(2)))).when(
        NamedKeys((key(1), key(2)))
    ).then(revoked=[key(2)], quarantined=[key(1)])


def test_an_unreadable_key_is_kept_whatever_the_environment_its_environment_is_unknown() -> None:
    given((key(1), UnreadableKey(ORG)), (key(2), history(key(2), environment="test"))).when(
        AllKeys(), environment="test"
    ).then(revoked=[key(2)], quarantined=[key(1)])


@pytest.mark.parametrize("selection", [AllKeys(), CreatedBy("key_of_the_actor")])
def test_a_selection_keeps_the_shells_order_within_the_org_and_environment(
    selection: KeySelection,
) -> None:
    given(
        (key(3), history(key(3))),
        (key(1), history(key(1), "revoked")),
        (key(2), history(key(2), environment="test")),
        (key(4), history(key(4), org="beta")),
        (key(5), history(key(5), "disabled")),
    ).when(selection, environment="live").then(revoked=[key(3), key(5)], already_terminal=[key(1)])


def test_an_empty_selection_decides_nothing() -> None:
    given().when(AllKeys()).then(revoked=[])


def test_a_selection_of_more_keys_than_one_transaction_takes_is_refused() -> None:
    check_selection_size(MAX_SELECTED_KEYS)
    with pytest.raises(KeyledgerError) as caught:
        check_selection_size(MAX_SELECTED_KEYS + 1)
    assert caught.value.code == "too_many_keys"
    assert caught.value.details == {"limit": MAX_SELECTED_KEYS}
