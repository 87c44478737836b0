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
        address = ipaddress.ip_address(raw.strip())
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
