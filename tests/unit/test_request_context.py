"""Every route the app serves runs in the request context (id, error mapping, metrics, log).

The app has no aiohttp middleware: a route added with ``app.add_routes`` instead of
``serve_routes`` would answer without any of them, and no other test would notice.
"""

from __future__ import annotations

import io

from aiohttp.test_utils import make_mocked_request

from service.http.app import create_app
from service.http.request_context import error_answer
from service.http.routing import NoSuchRoute
from service.settings import Settings


def test_every_route_is_served_in_context_and_unmatched_requests_last() -> None:
    settings = Settings.from_env({}, database_url="postgresql://unused", pepper="p" * 40)
    app = create_app(settings)
    routes = list(app.router.routes())
    assert len(routes) > 20
    bare = [
        f"{route.method} {route.resource.canonical}"
        for route in routes
        if route.resource and not hasattr(route.handler, "__wrapped__")
    ]
    assert bare == []
    resources = list(app.router.resources())
    assert isinstance(resources[-1], NoSuchRoute)
    assert not any(isinstance(resource, NoSuchRoute) for resource in resources[:-1])


def test_a_client_gone_in_the_middle_of_its_body_is_499_and_no_error_logged(
    captured_logs: io.StringIO,
) -> None:
    # keyledger serve does not cancel a handler whose client left (aiohttp's default): its
    # body's read raises ConnectionResetError, and that is the client's doing.
    request = make_mocked_request("POST", "/v1/verify")
    before = len(captured_logs.getvalue())
    answer = error_answer(ConnectionResetError("Connection lost"), request, "req_x", "/v1/verify")
    assert answer.status == 499
    assert "unhandled_error" not in captured_logs.getvalue()[before:]
