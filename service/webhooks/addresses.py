"""Which IP addresses a webhook may be delivered to (docs/security.md, "Webhooks and SSRF").

One function, ``address_refusal``, decides for a URL's literal host at
registration and for every address its name resolves to before a delivery.
An IPv6 address that carries an IPv4 one (IPv4-mapped or -compatible, NAT64,
6to4) is judged by the IPv4 address it reaches: ``64:ff9b::7f00:1`` is
loopback through a NAT64 gateway. Hosts written as a number the way
``inet_aton`` reads them (``127.1``, ``2130706433``, ``0x7f000001``,
``0177.0.0.1``) are addresses too: that is how resolvers and HTTP clients
treat them.
"""

from __future__ import annotations

import ipaddress
import re

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAPPED_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 IPv4-translated
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: layout chosen per network
# One numeric label as inet_aton reads it: decimal, 0x-hex, or 0-led octal.
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")


def host_address(host: str) -> Address | None:
    """The address ``host`` (a URL's host, brackets allowed) spells, or None for a name.

    ValueError for a host that ends in a number yet is no IPv4 address
    (``1.2.3.999``): resolvers disagree on those, so none is called.
    """
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # a trailing dot: "127.0.0.1."
    if not _NUMBER.fullmatch(labels[-1]):
        return None  # a name (its last label is not a number)
    return ipaddress.IPv4Address(_inet_aton(labels))


def _inet_aton(labels: list[str]) -> int:
    if len(labels) > 4:
        raise ValueError("more than 4 numbers")
    numbers = [_label_number(label) for label in labels]
    last = numbers.pop()
    # a.b.c.d, a.b.c (c is 16 bits), a.b (b is 24 bits), a (32 bits).
    if any(number > 255 for number in numbers) or last >= 256 ** (4 - len(numbers)):
        raise ValueError("a number out of range")
    value = last
    for index, number in enumerate(numbers):
        value += number << (8 * (3 - index))
    return value


def _label_number(label: str) -> int:
    if not _NUMBER.fullmatch(label):
        raise ValueError(f"not a number: {label!r}")
    if label[:2] in ("0x", "0X"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label[1:], 8)  # ValueError for 8 or 9
    return int(label)


def reached_address(address: Address) -> Address:
    """The IPv4 address an IPv6 one carries to (mapped, compatible, NAT64, 6to4), else itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _MAPPED_SIIT or address in _NAT64 or address in _COMPATIBLE:
        if address in _COMPATIBLE and int(address) <= 1:
            return address  # :: and ::1 are themselves
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_refusal(address: Address) -> str | None:
    """Why no webhook may be delivered to ``address``, or None if it is a public unicast one."""
    reached = reached_address(address)
    shown = str(reached) if reached == address else f"{address}, which reaches {reached}"
    if isinstance(reached, ipaddress.IPv6Address) and (
        reached in _NAT64_LOCAL or reached.teredo is not None
    ):
        return f"webhooks through translation prefixes are refused ({shown})"
    if (
        not reached.is_global
        or reached.is_multicast
        or reached.is_reserved
        or reached.is_unspecified
        or (isinstance(reached, ipaddress.IPv6Address) and reached.is_site_local)
    ):
        return (
            "webhooks to loopback, private, link-local, multicast or reserved addresses"
            f" are refused ({shown})"
        )
    return None
