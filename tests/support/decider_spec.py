"""Given / when / then for the decider, so a test reads like a row of the lifecycle table.

::

    given(generated(), disabled()).when(EnableKey(KEY, T1)).then(enabled(T1))
    given(generated(), revoked()).when(RenameKey(KEY, "X", T1)).then_refused("key_not_mutable")
    given().when(RenameKey(KEY, "X", T1)).then_refused("key_not_found")

``given`` folds its events with ``evolve`` (no events: the key does not
exist), ``when`` runs ``decide``; each ``then…`` asserts what ``decide`` did and
hands back something to look at further (the state after, the event, the
error). Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import pytest

from events.models import KeyEvent
from service.domain.commands import Command
from service.domain.decider import decide, fold
from service.domain.state import KeyState
from service.errors import ErrorCode, KeyledgerError

Event = TypeVar("Event", bound=KeyEvent)


def given(*history: KeyEvent) -> Given:
    """A key whose log holds ``history`` (none: a key that does not exist)."""
    return Given(history)


@dataclass(frozen=True)
class Given:
    history: tuple[KeyEvent, ...]

    def when(self, command: Command) -> When:
        """``command`` decided against the state folded from the history."""
        return When(self.history, command)


@dataclass(frozen=True)
class When:
    history: tuple[KeyEvent, ...]
    command: Command

    def _decide(self) -> list[KeyEvent]:
        return decide(self.command, fold(self.history))

    def then(self, *expected: KeyEvent) -> KeyState | None:
        """Exactly ``expected`` is recorded; returns the state once they are folded in."""
        events = self._decide()
        assert events == list(expected)
        return fold(events, fold(self.history))

    def then_nothing(self) -> None:
        """The command is a no-op: nothing is recorded (and nothing refused)."""
        assert self._decide() == []

    def then_one(self, kind: type[Event]) -> tuple[Event, KeyState]:
        """One event of ``kind`` is recorded; returns it and the state after it."""
        events = self._decide()
        assert [type(event) for event in events] == [kind]
        [event] = events
        assert isinstance(event, kind)
        state = fold(events, fold(self.history))
        assert state is not None
        return event, state

    def then_refused(self, code: ErrorCode) -> KeyledgerError:
        """The command is refused with ``code``; returns the error."""
        with pytest.raises(KeyledgerError) as caught:
            self._decide()
        assert caught.value.code == code
        return caught.value
