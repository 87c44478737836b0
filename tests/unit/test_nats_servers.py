"""``KEYLEDGER_NATS_URL`` as a list of servers: one parser for keyledger and subscribers.

See docs/security.md §9.
"""

from __future__ import annotations

import traceback

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.servers import InvalidServerList, nats_servers


def test_a_comma_separated_list_tolerates_whitespace_around_entries() -> None:
    assert nats_servers(" nats://n1:4222 ,nats://n2:4223,\tnats://n3:4224 ") == [
        "nats://n1:4222",
        "nats://n2:4223",
        "nats://n3:4224",
    ]


@pytest.mark.parametrize(
    ("spec", "servers"),
    [
        ("nats://127.0.0.1:4222", ["nats://127.0.0.1:4222"]),
        ("nats1.internal", ["nats://nats1.internal"]),
        ("10.0.0.1:4222, 10.0.0.2:4222", ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]),
        ("tls://a:4443,tls://b:4443", ["tls://a:4443", "tls://b:4443"]),
        ("nats://[::1]:4222", ["nats://[::1]:4222"]),
        ("nats://user:pass@a:4222/", ["nats://user:pass@a:4222/"]),
        ("ws://a:8080/nats,wss://b/nats", ["ws://a:8080/nats", "wss://b/nats"]),
    ],
)
def test_every_form_nats_py_takes_is_accepted(spec: str, servers: list[str]) -> None:
    assert nats_servers(spec) == servers


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("", "no NATS server"),
        ("   ", "no NATS server"),
        ("nats://a:4222,,nats://b:4222", "entry 2 of 3 is empty"),
        ("nats://a:4222,", "entry 2 of 2 is empty"),
        (",nats://a:4222", "entry 1 of 2 is empty"),
        ("http://a:4222", "scheme must be one of"),
        ("nats://:4222", "names no host"),
        ("nats://a:0", "port must be 1-65535"),
        ("nats://a:", "port must be 1-65535"),
        ("nats://a:99999", "not a URL with a host and a port"),
        ("nats://a:4222;nats://b:4222", "not a URL with a host and a port"),
        ("nats://a:4222 nats://b:4222", "contains whitespace"),
        ("nats://a:4222/path", "no path, query or fragment"),
        ("nats://a:4222?x=1", "no path, query or fragment"),
        ("nats://[::1:4222", "not a URL"),
        ("ws://a:8080,nats://b:4222", "cannot be mixed"),
    ],
)
def test_an_invalid_entry_is_refused_saying_which_and_why(spec: str, reason: str) -> None:
    with pytest.raises(InvalidServerList, match=reason.replace("?", r"\?")):
        nats_servers(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "nats://alice:hunter2@a:port",
        "nats://alice:hunter2@a:4222/path",
        "nats://hunter2@a:4222?x",
        "nats://alice:hun/ter2@a:4222",
        "nats://a:4222, nats://alice:hunter2@:4222",
    ],
)
def test_an_error_never_repeats_credentials(spec: str) -> None:
    with pytest.raises(InvalidServerList) as raised:
        nats_servers(spec)
    # Not in the message, nor in a chained exception a traceback would print.
    printed = "".join(traceback.format_exception(raised.value))
    assert "hunter2" not in printed and "hun/ter2" not in printed


hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True)
blank = st.sampled_from(["", " ", "\t", "  "])


@given(st.lists(st.tuples(hosts, st.integers(1, 65535), blank, blank), min_size=1, max_size=5))
def test_any_list_of_hosts_and_ports_round_trips(
    entries: list[tuple[str, int, str, str]],
) -> None:
    spec = ",".join(f"{before}nats://{host}:{port}{after}" for host, port, before, after in entries)
    assert nats_servers(spec) == [f"nats://{host}:{port}" for host, port, _, _ in entries]
