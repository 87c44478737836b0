"""IP allowlists (``allowed_cidrs``) and the client address behind proxies, without I/O."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.models import KeyIpAllowlistChanged
from service.settings import Settings, SettingsError
from service.verification.index import entry_from_state
from service.verification.ip_allowlist import address_allowed, client_address, compile_cidrs
from service.verification.policy import Requirements, verify_bearer
from tests.unit.test_verification import NOW, PEPPER, generated, indexed

NETWORKS = compile_cidrs(["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"])
PROXIES = compile_cidrs(["127.0.0.1/32", "172.16.0.0/12", "fd00::/8"])


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("192.168.1.7", True),
        ("192.168.1.8", False),
        ("11.0.0.1", False),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("::ffff:10.0.0.1", True),  # an IPv4 address written as IPv6
        ("::ffff:11.0.0.1", False),
        ("::a00:1", False),  # IPv4-compatible, not mapped: an IPv6 address
        (None, False),
        ("", False),
        ("10.0.0.0/8", False),  # a network is not an address
        ("10.1.2.3:80", False),
        ("10.1.2.3\n", False),  # matched whole: a trailing newline is not an address
        ("fe80::1%eth0", False),
        ("١٠.0.0.1", False),  # not ASCII digits
        ("x" * 100, False),
    ],
)
def test_address_allowed(address: str | None, allowed: bool) -> None:
    assert address_allowed(NETWORKS, address) is allowed


@given(st.ip_addresses())
def test_an_address_is_allowed_exactly_when_a_network_holds_it(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    mapped = getattr(address, "ipv4_mapped", None) or address
    expected = any(mapped.version == n.version and mapped in n for n in NETWORKS)
    assert address_allowed(NETWORKS, str(address)) is expected


@given(st.text(max_size=70))
def test_any_text_is_an_answer_never_an_error(text: str) -> None:
    assert address_allowed(NETWORKS, text) in (True, False)
    client_address("127.0.0.1", [text], text, PROXIES)


@pytest.mark.parametrize(
    ("remote", "forwarded", "real_ip", "client"),
    [
        # A peer that is not a trusted proxy is its own client, whatever it claims.
        ("203.0.113.9", ["10.0.0.1"], "10.0.0.2", "203.0.113.9"),
        # Behind a trusted proxy: the rightmost address that is not a trusted proxy.
        ("127.0.0.1", ["10.0.0.1"], None, "10.0.0.1"),
        ("127.0.0.1", ["6.6.6.6, 10.0.0.1, 172.16.0.5"], None, "10.0.0.1"),
        ("127.0.0.1", ["6.6.6.6", "10.0.0.1,172.16.0.5"], None, "10.0.0.1"),
        ("127.0.0.1", ["::ffff:10.0.0.1"], None, "10.0.0.1"),
        # Without X-Forwarded-For: X-Real-IP, else the proxy itself.
        ("127.0.0.1", [], "10.0.0.3", "10.0.0.3"),
        ("127.0.0.1", [], None, "127.0.0.1"),
        # A chain with garbage cannot be believed: no address.
        ("127.0.0.1", ["10.0.0.1, junk"], None, None),
        ("127.0.0.1", [""], None, None),
        # Every hop a trusted proxy: where the chain began.
        ("127.0.0.1", ["172.16.0.1, 172.16.0.2"], None, "172.16.0.1"),
    ],
)
def test_client_address_behind_proxies(
    remote: str, forwarded: list[str], real_ip: str | None, client: str | None
) -> None:
    assert client_address(remote, forwarded, real_ip, PROXIES) == client


def test_no_trusted_proxies_means_the_peer_is_the_client() -> None:
    assert client_address("127.0.0.1", ["10.0.0.1"], "10.0.0.2", ()) == "127.0.0.1"


def test_verify_checks_the_allowlist_after_status_and_environment() -> None:
    event, secret = generated(allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"))
    index = indexed(event)

    def code(**requirements: object) -> str:
        return verify_bearer(index, PEPPER, secret, Requirements(**requirements), NOW).code  # type: ignore[arg-type]

    assert code(ip="10.9.9.9") == "VALID"
    assert code(ip="2001:db8::5") == "VALID"
    assert code(ip="11.0.0.1") == "IP_NOT_ALLOWED"
    assert code() == "IP_NOT_ALLOWED"  # no address given
    assert code(ip="11.0.0.1", environment="test") == "WRONG_ENVIRONMENT"
    assert code(ip="11.0.0.1", scopes=("nope",)) == "IP_NOT_ALLOWED"
    assert code(ip="10.0.0.1", scopes=("nope",)) == "INSUFFICIENT_SCOPE"
    # Cleared by a change: any address again, and none needed.
    index.apply_event(
        KeyIpAllowlistChanged(
            key_id=event.key_id,
            org_id="acme",
            occurred_at=NOW,
            allowed_cidrs=(),
            previous_allowed_cidrs=event.allowed_cidrs,
        )
    )
    assert code() == "VALID"


def test_the_index_compiles_networks_once_and_gives_them_back_as_text() -> None:
    event, _ = generated(allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"))
    entry = indexed(event).by_key_id(event.key_id)
    assert entry is not None
    assert all(
        isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network) for n in entry.allowed_cidrs
    )
    assert entry.to_state().allowed_cidrs == ("10.0.0.0/8", "2001:db8::/32")
    assert entry_from_state(entry.to_state()).allowed_cidrs == entry.allowed_cidrs


def test_trusted_proxies_setting() -> None:
    settings = Settings.from_env({"KEYLEDGER_TRUSTED_PROXIES": " 10.0.0.0/8, ::1 ,"})
    assert settings.trusted_proxies == "10.0.0.0/8,::1/128"
    assert settings.trusted_proxy_networks == compile_cidrs(["10.0.0.0/8", "::1/128"])
    assert Settings.from_env({}).trusted_proxy_networks == ()
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"KEYLEDGER_TRUSTED_PROXIES": "10.0.0.0/8,nope"})
    assert "KEYLEDGER_TRUSTED_PROXIES" in str(refused.value) and "nope" not in str(refused.value)


def test_an_ipv4_mapped_network_is_kept_as_its_ipv4_network_and_matches() -> None:
    from service.domain.vocabulary import cidr

    assert cidr("::ffff:192.168.0.0/112") == "192.168.0.0/16"
    assert cidr("::ffff:10.1.2.3") == "10.1.2.3/32"
    assert cidr("2001:db8::/32") == "2001:db8::/32"
    networks = compile_cidrs([cidr("::ffff:192.168.0.0/112")])
    assert address_allowed(networks, "192.168.0.5")
    assert address_allowed(networks, "::ffff:192.168.0.5")
    assert not address_allowed(networks, "192.169.0.5")
