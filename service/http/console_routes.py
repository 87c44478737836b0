"""``/console``: the web console, a page and its assets shipped in this package.

The console is a single page (``console/index.html``), a style sheet and a
few vanilla JavaScript modules (``console.js`` and what it imports): every
path under ``/console`` that names a view (sign in, an org's keys, one key)
answers the same page, which reads its location and calls the ``/v1`` API
with the service key the person pasted (kept in the tab's session storage).
No build step and no third-party code: nothing to fetch from a CDN, nothing
to audit but these files.

Every answer carries a strict Content-Security-Policy (scripts and styles
from this origin only, no inline code, no framing, connections to this
origin only) and the usual hardening headers.
"""

from __future__ import annotations

import functools
from pathlib import Path

from aiohttp import web

from service.errors import KeyledgerError

routes = web.RouteTableDef()
ASSETS = Path(__file__).with_name("console")
# The assets by name and media type: nothing else in the folder is ever served.
_SCRIPT = "text/javascript; charset=utf-8"
ASSET_TYPES = {
    "console.js": _SCRIPT,
    "api.js": _SCRIPT,
    "dialogs.js": _SCRIPT,
    "ui.js": _SCRIPT,
    "console.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@functools.cache
def _read(name: str) -> bytes:
    return (ASSETS / name).read_bytes()


def _page() -> web.Response:
    return web.Response(
        body=_read("index.html"),
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


@routes.get("/console")
async def console(_: web.Request) -> web.Response:
    """The console: sign in, then the org picker."""
    return _page()


@routes.get("/console/orgs/{org_id}")
async def console_org(_: web.Request) -> web.Response:
    """The console on an org's keys (the page checks the org with the API)."""
    return _page()


@routes.get("/console/orgs/{org_id}/keys/{key_id}")
async def console_key(_: web.Request) -> web.Response:
    """The console on one key and its timeline."""
    return _page()


@routes.get("/console/assets/{name}")
async def console_asset(request: web.Request) -> web.Response:
    """One of the console's assets (a fixed list: no path from the URL reaches the disk)."""
    name = request.match_info["name"]
    media = ASSET_TYPES.get(name)
    if media is None:
        raise KeyledgerError("not_found", "no such asset")
    return web.Response(body=_read(name), headers={**SECURITY_HEADERS, "Content-Type": media})
