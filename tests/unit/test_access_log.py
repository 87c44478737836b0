"""The access log: one line per request, written once per event-loop turn in whole lines."""

from __future__ import annotations

import asyncio
import io
import json

from service.log_config import _AccessLog, log_access


class CountingStream(io.StringIO):
    """A stream that remembers each write (to see how lines are grouped)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_a_turns_lines_go_out_together_in_whole_lines_of_at_most_4096_bytes() -> None:
    stream = CountingStream()
    # The access stream alone (configure_logging would reset the session's logging).
    _AccessLog.flush()
    previous, _AccessLog.stream = _AccessLog.stream, stream

    async def one_turn() -> None:
        for number in range(100):
            log_access(f"req_{number}", "POST", "/v1/verify", 200, 0.5, "key_x", "VALID")
        assert stream.getvalue() == ""  # not yet: at the end of the turn
        await asyncio.sleep(0)

    try:
        asyncio.run(one_turn())
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [line["request_id"] for line in lines] == [f"req_{n}" for n in range(100)]
        assert all(line["outcome"] == "VALID" and line["status"] == 200 for line in lines)
        assert 1 < len(stream.writes) < 100
        assert all(len(text) <= 4096 and text.endswith("\n") for text in stream.writes)
        # Outside an event loop, a line is written at once; no outcome, no field.
        log_access("req_x", "GET", "/healthz", 200, 0.1, None)
        last = json.loads(stream.getvalue().splitlines()[-1])
        assert last["request_id"] == "req_x" and "outcome" not in last
    finally:
        _AccessLog.stream = previous


def test_with_a_linger_lines_wait_until_4096_bytes_or_their_time_and_none_is_lost() -> None:
    stream = CountingStream()
    _AccessLog.flush()
    previous = _AccessLog.stream, _AccessLog.linger
    _AccessLog.stream, _AccessLog.linger = stream, 3600.0

    async def turns() -> None:
        log_access("req_first", "POST", "/v1/verify", 200, 0.5, "key_x", "VALID")
        queued = _AccessLog.queued
        # A timer, due within the linger (not a flush at the end of the turn).
        assert isinstance(queued, asyncio.TimerHandle)
        assert queued.when() <= asyncio.get_running_loop().time() + 3600.0
        for _ in range(3):
            await asyncio.sleep(0)
        assert stream.getvalue() == ""  # turns later, still waiting for company
        for number in range(40):  # > 14 lines (≈ 4096 bytes) waiting: out at the end of this turn
            log_access(f"req_{number}", "POST", "/v1/verify", 200, 0.5, "key_x", "VALID")
        assert stream.getvalue() == ""
        await asyncio.sleep(0)
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [line["request_id"] for line in lines] == ["req_first"] + [
            f"req_{n}" for n in range(40)
        ]
        assert all(len(text) <= 4096 for text in stream.writes)
        log_access("req_last", "GET", "/healthz", 200, 0.1, None)

    try:
        asyncio.run(turns())
        # The loop is gone with a line still waiting: the exit's flush writes it, and a
        # line written from another loop later is not held back by the old loop's timer.
        assert "req_last" not in stream.getvalue()
        _AccessLog.flush()
        assert json.loads(stream.getvalue().splitlines()[-1])["request_id"] == "req_last"

        async def another_loop() -> None:
            _AccessLog.linger = 0.0
            log_access("req_other", "GET", "/healthz", 200, 0.1, None)
            await asyncio.sleep(0)
            assert json.loads(stream.getvalue().splitlines()[-1])["request_id"] == "req_other"

        asyncio.run(another_loop())
    finally:
        _AccessLog.flush()
        _AccessLog.stream, _AccessLog.linger = previous


def test_request_ids_are_written_as_json_strings_whatever_they_hold() -> None:
    stream = io.StringIO()
    _AccessLog.flush()
    previous, _AccessLog.stream = _AccessLog.stream, stream
    odd = ['a"b', "a\\b", "tab\there", "é", "sk_live_" + "A" * 49, "plain-id_1.2:3"]
    try:
        for request_id in odd:
            log_access(request_id, "GET", "/healthz", 200, 0.1, None)
        written = [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
    finally:
        _AccessLog.stream = previous
    assert written[:4] + written[5:] == odd[:4] + odd[5:]
    assert "A" * 49 not in written[4]  # a secret-shaped id is scrubbed
