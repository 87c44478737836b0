"""``POST /v1/leaks``: leak reports from secret scanners (docs/api.md#leak-reports).

No service key: the scanner's ECDSA signature over the raw body is the
authentication (checked before the body is even parsed).
"""

from __future__ import annotations

from aiohttp import web

from service.errors import KeyledgerError
from service.http.body import read_bytes
from service.http.context import keyledger
from service.http.request_context import request_id_of
from service.leaks import MAX_REPORT_BYTES, check_signature, parse_report

routes = web.RouteTableDef()
KEY_ID_HEADER = "Github-Public-Key-Identifier"
SIGNATURE_HEADER = "Github-Public-Key-Signature"


@routes.post("/v1/leaks")
async def report_leaks(request: web.Request) -> web.Response:
    service = keyledger(request)
    keys_file = service.settings.leak_report_keys
    if keys_file is None:
        # Not enabled on this server: as if the route did not exist.
        raise KeyledgerError(
            "not_found", "leak reports are not enabled here (KEYLEDGER_LEAK_REPORT_KEYS)"
        )
    # The signed bytes, as sent, up to a report's own limit.
    body = await read_bytes(request, MAX_REPORT_BYTES) or b""
    check_signature(
        keys_file, body, request.headers.get(KEY_ID_HEADER), request.headers.get(SIGNATURE_HEADER)
    )
    entries = parse_report(body)
    return web.json_response(await service.leaks.handle(entries, request_id_of(request)))
