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
