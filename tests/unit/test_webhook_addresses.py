"""Webhook receivers: forbidden addresses are refused however they are spelled.

At registration (``checked_url``) and before a delivery (``refusal_before_sending``,
whose resolution of a literal address is that address): one judgement, on the
IPv4 address an IPv6 one reaches (mapped, NAT64, 6to4).
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from service.errors import KeyledgerError
from service.webhooks.addresses import address_refusal, host_address
from service.webhooks.receivers import checked_url, refusal_before_sending

FORBIDDEN_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
FORBIDDEN_V6 = ["::1/128", "fe80::/10", "fc00::/7", "ff00::/8", "fec0::/10", "64:ff9b:1::/48"]


def _in(network: str) -> st.SearchStrategy[int]:
    net = ipaddress.ip_network(network)
    return st.integers(int(net.network_address), int(net.broadcast_address))


FORBIDDEN_V4_VALUES = st.one_of(*[_in(network) for network in FORBIDDEN_V4])


def _v4_spellings(value: int) -> list[str]:
    octets = value.to_bytes(4, "big")
    return [
        str(ipaddress.IPv4Address(value)),
        str(value),  # 2130706433
        hex(value),  # 0x7f000001
        ".".join(f"0{octet:o}" for octet in octets),  # 0177.00.00.01
        f"{octets[0]}.{int.from_bytes(octets[1:], 'big')}",  # 127.1
        f"{octets[0]}.{octets[1]}.{int.from_bytes(octets[2:], 'big')}",  # 127.0.1
        f"{ipaddress.IPv4Address(value)}.",  # trailing dot
        f"[::ffff:{ipaddress.IPv4Address(value)}]",  # IPv4-mapped
        f"[{ipaddress.IPv6Address((0x64FF9B << 96) | value)}]",  # NAT64
        f"[{ipaddress.IPv6Address((0x2002 << 112) | (value << 80))}]",  # 6to4
    ]


FORBIDDEN_HOSTS = st.one_of(
    st.builds(_v4_spellings, FORBIDDEN_V4_VALUES).flatmap(st.sampled_from),
    st.one_of(*[_in(network) for network in FORBIDDEN_V6]).map(
        lambda value: f"[{ipaddress.IPv6Address(value)}]"
    ),
)


@given(host=FORBIDDEN_HOSTS, scheme=st.sampled_from(["http", "https"]))
@example(host="224.0.0.1", scheme="http")
@example(host="[64:ff9b::7f00:1]", scheme="http")
@example(host="[2002:7f00:1::]", scheme="http")
@example(host="127.1", scheme="http")
@example(host="2130706433", scheme="http")
@example(host="0x7f000001", scheme="http")
@example(host="0177.0.0.1", scheme="http")
def test_forbidden_addresses_are_refused_in_any_spelling(host: str, scheme: str) -> None:
    url = f"{scheme}://{host}/x"
    with pytest.raises(KeyledgerError) as refused:
        checked_url(url, allow_private=False)
    assert refused.value.code == "invalid_webhook_url"
    assert checked_url(url, allow_private=True) == url


@given(value=FORBIDDEN_V4_VALUES)
async def test_delivery_refuses_what_registration_refuses(value: int) -> None:
    # A literal address resolves to itself: no DNS involved, the same judgement.
    for host in _v4_spellings(value)[-3:]:
        assert await refusal_before_sending(f"http://{host}/x", allow_private=False), host


@pytest.mark.parametrize(
    "host",
    ["8.8.8.8", "134744072", "[64:ff9b::808:808]", "[2002:808:808::]", "[2606:4700::1111]"],
)
def test_public_addresses_are_accepted_in_any_spelling(host: str) -> None:
    assert checked_url(f"https://{host}/x", allow_private=False) == f"https://{host}/x"


@pytest.mark.parametrize("host", ["1.2.3.999", "1.2.3.4.5", "09.1.1.1", "foo.123"])
def test_hosts_ending_in_a_number_that_are_no_address_are_refused(host: str) -> None:
    with pytest.raises(KeyledgerError, match="no IPv4 address"):
        checked_url(f"https://{host}/x", allow_private=False)


@given(value=st.integers(0, 2**32 - 1))
def test_inet_aton_spellings_read_as_their_address(value: int) -> None:
    for spelling in _v4_spellings(value)[:7]:
        assert host_address(spelling) == ipaddress.IPv4Address(value), spelling


def test_names_are_not_addresses() -> None:
    assert host_address("hooks.example.com") is None
    assert host_address("0x7f000001.example") is None
    assert address_refusal(ipaddress.ip_address("2606:4700::1111")) is None
