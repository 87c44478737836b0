"""A key's IP allowlist (``allowed_cidrs``), compiled once when the key is indexed.

The events hold the networks as text (canonical ``ipaddress`` form); the
index keeps them parsed, so a verify only parses the caller's address and
compares integers. IPv4 and IPv6 networks may be mixed; an IPv4 address
mapped into IPv6 (``::ffff:10.0.0.1``) is checked as the IPv4 address it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def compile_cidrs(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """The networks of ``cidrs`` (ValueError on one that is not a network)."""
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


def parse_address(raw: str | None) -> Address | None:
    """``raw`` as an IP address (an IPv4-mapped IPv6 one as IPv4), or None if it is not one."""
    if raw is None or not raw.isascii() or len(raw) > 64:
        return None
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_allowed(networks: tuple[Network, ...], raw: str | None) -> bool:
    """Whether the address ``raw`` is inside one of ``networks`` (never when it is no address)."""
    address = parse_address(raw)
    if address is None:
        return False
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    remote: str | None,
    forwarded_for: list[str],
    real_ip: str | None,
    trusted: tuple[Network, ...],
) -> str | None:
    """The address of the client a proxy forwards for, believing only ``trusted`` proxies.

    A request whose peer (``remote``) is not a trusted proxy is its own client:
    whatever it claims in ``X-Forwarded-For`` is ignored. Behind trusted proxies,
    ``X-Forwarded-For`` is read right to left (each proxy appends the address it
    saw) and the first address that is not a trusted proxy is the client; without
    the header, ``X-Real-IP``. An entry that is not an address means the chain
    cannot be believed: no address at all (which no allowlist admits).
    """
    if not trusted or not address_allowed(trusted, remote):
        return remote
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    if not hops:
        return real_ip.strip() if real_ip is not None else remote
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return None
        if not address_allowed(trusted, hop):
            return str(address)
    return hops[0]  # every hop is a trusted proxy: the first one is where it began
