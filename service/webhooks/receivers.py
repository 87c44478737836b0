"""Which webhook URLs keyledger will call (docs/security.md, "Webhooks and SSRF").

A webhook makes keyledger send requests to an address a caller chose: without
care, a caller could reach services inside the deployment's network (cloud
metadata at 169.254.169.254, an admin port on localhost). So a URL must be
http(s), without credentials, and by default its host must not be, or
resolve to, a loopback, private, link-local, multicast or otherwise non-public
address (``service.webhooks.addresses``). The check runs at registration
(literal addresses in any spelling, ``localhost``) and again before every
delivery (what the name resolves to now).
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

from service.errors import KeyledgerError
from service.webhooks.addresses import address_refusal, host_address

MAX_URL_LENGTH = 2048
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _refused(message: str) -> KeyledgerError:
    return KeyledgerError("invalid_webhook_url", message)


def checked_url(url: str, *, allow_private: bool) -> str:
    """``url`` if keyledger may deliver to it; else ``invalid_webhook_url``."""
    _check_characters(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port out of range
    except ValueError:
        raise _refused("the webhook URL cannot be parsed") from None
    if parts.scheme not in ("http", "https"):
        raise _refused("a webhook URL must start with http:// or https://")
    if not parts.hostname:
        raise _refused("a webhook URL must name a host")
    if parts.username is not None or parts.password is not None:
        # It would be stored and shown in every listing: credentials belong in the signature.
        raise _refused("a webhook URL must not carry credentials")
    if parts.fragment:
        raise _refused("a webhook URL must not have a #fragment")
    if port == 0:
        raise _refused("a webhook URL must not use port 0")
    if not allow_private:
        host = parts.hostname.rstrip(".").lower()
        if host in _LOCAL_NAMES or host.endswith(".localhost"):
            raise _refused("webhooks to local addresses are refused")
        try:
            address = host_address(host)
        except ValueError:
            raise _refused(
                "the webhook URL's host ends in a number but is no IPv4 address"
            ) from None
        refusal = address_refusal(address) if address is not None else None
        if refusal is not None:
            raise _refused(refusal)
    return url


def _check_characters(url: str) -> None:
    """``invalid_webhook_url`` saying which characters are wrong, if any is."""
    if len(url) > MAX_URL_LENGTH:
        raise _refused(f"a webhook URL is at most {MAX_URL_LENGTH} characters")
    if not url.isascii():
        raise _refused(
            "a webhook URL is ASCII: give an international host name punycode-encoded"
            " (xn--…) and percent-encode other characters"
        )
    if " " in url:
        raise _refused("a webhook URL has no spaces: percent-encode them (%20)")
    if not url.isprintable():
        raise _refused("a webhook URL has no control characters")


async def refusal_before_sending(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` must not be called now (its host resolves to a non-public address), or None.

    Checked before each delivery, since a name may point elsewhere than it
    did at registration.
    """
    if allow_private:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except OSError as exc:
        return f"cannot resolve the host: {exc.strerror or exc.__class__.__name__}"
    for info in infos:
        try:
            address = host_address(str(info[4][0]).split("%")[0])
        except ValueError:
            address = None
        if address is None:
            return "the host resolves to something that is not an IP address"
        refusal = address_refusal(address)
        if refusal is not None:
            return f"the host resolves to a refused address: {refusal}"
    return None
