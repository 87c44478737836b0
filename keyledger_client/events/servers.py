"""NATS server lists: ``KEYLEDGER_NATS_URL`` and every subscriber's ``--nats``.

A NATS cluster is reached through any of its servers, so the setting is a
comma-separated list (``nats://n1:4222, nats://n2:4222, nats://n3:4222``).
nats-py takes a *list* of URLs; handed the whole string it sees one URL with
a nonsense host and never connects. This is the one place that turns the
setting into that list, and it lives in ``keyledger_client.events`` so that subscribers
(which never import keyledger's service) parse it the same way::

    nc = await nats.connect(servers=nats_servers("nats://a:4222,nats://b:4222"))

What keyledger does on a cluster: docs/security.md §9.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})
_WEBSOCKET = frozenset({"ws", "wss"})


class InvalidServerList(ValueError):
    """A NATS server list that nats-py could not use; the message says which entry and why."""


def nats_servers(spec: str) -> list[str]:
    """The server URLs in a comma-separated ``spec``, each with a scheme.

    Whitespace around entries is ignored. ``host`` and ``host:port`` get
    ``nats://`` (nats-py adds port 4222 when none is given). An empty entry,
    an unknown scheme, a missing host, a bad port, a path or query on a
    ``nats``/``tls`` URL, or websocket URLs mixed with others raise
    ``InvalidServerList``; its message never repeats credentials.
    """
    entries = [entry.strip() for entry in spec.split(",")]
    if entries == [""]:
        raise InvalidServerList("no NATS server given")
    servers = [_server(entry, number, len(entries)) for number, entry in enumerate(entries, 1)]
    kinds = {urlsplit(server).scheme in _WEBSOCKET for server in servers}
    if len(kinds) > 1:
        raise InvalidServerList("websocket (ws/wss) and nats/tls servers cannot be mixed")
    return servers


def _server(entry: str, number: int, count: int) -> str:
    where = f"entry {number} of {count}"
    if not entry:
        raise InvalidServerList(f"{where} is empty (a stray comma?)")
    url = entry if "://" in entry else f"nats://{entry}"
    if any(character.isspace() for character in entry):
        raise InvalidServerList(f"{where} ({_shown(url)}) contains whitespace (a missing comma?)")
    try:
        parts = urlsplit(url)
        port = parts.port  # parses the port: ValueError when not a number in 0-65535
    except ValueError:
        # Not the parser's own message: it may quote part of a password.
        raise InvalidServerList(
            f"{where} ({_shown(url)}) is not a URL with a host and a port 1-65535"
        ) from None
    where = f"{where} ({_shown(url)})"
    if parts.scheme not in _SCHEMES:
        raise InvalidServerList(f"{where}: scheme must be one of {', '.join(sorted(_SCHEMES))}")
    if not parts.hostname:
        raise InvalidServerList(f"{where} names no host")
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise InvalidServerList(f"{where}: port must be 1-65535")
    if parts.scheme not in _WEBSOCKET and (
        parts.path not in ("", "/") or parts.query or parts.fragment
    ):
        raise InvalidServerList(f"{where}: a NATS URL has no path, query or fragment")
    return url


def _shown(url: str) -> str:
    """``url`` fit for an error message: credentials (``user:password@``, ``token@``) hidden."""
    scheme, _, rest = url.rpartition("://")
    if "@" in rest:
        # Everything up to the last "@": a password may itself hold "/", ":" or "@".
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}://{rest}" if scheme else rest


def shown_servers(spec: str) -> str:
    """A server list fit for an error message: each entry's credentials hidden."""
    return ",".join(_shown(entry.strip()) for entry in spec.split(","))
