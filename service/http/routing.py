"""The app's routes: each served in the request context, and a last resource for the rest.

A request no route takes is answered by the router's last resource
(``NoSuchRoute``), through the same wrapper as every route
(``service.http.request_context.in_context``): 404 ``not_found``, or 405
``method_not_allowed`` with ``Allow`` when the path has routes for other
methods, as aiohttp's own router would decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NoReturn

from aiohttp import web
from yarl import URL

from service.http.request_context import UNMATCHED, Handler, RequestObserver, in_context

if TYPE_CHECKING:  # the type aiohttp's resources describe themselves with
    from aiohttp.web_urldispatcher import _InfoDict


def serve_routes(
    app: web.Application, tables: Iterable[web.RouteTableDef], observe: RequestObserver | None
) -> None:
    """Add the routes of ``tables`` to ``app`` in order, each handler ``in_context``, then
    ``NoSuchRoute`` for the rest."""
    router = app.router
    for table in tables:
        for definition in table:
            if not isinstance(definition, web.RouteDef):
                raise TypeError(f"only plain routes are served, not {definition!r}")
            # The route's resource, made first for its template (adding the route reuses it).
            resource = router.add_resource(definition.path, name=definition.kwargs.get("name"))
            handler = in_context(definition.handler, resource.canonical, observe)
            wrapped = web.RouteDef(definition.method, definition.path, handler, definition.kwargs)
            wrapped.register(router)
    router.register_resource(NoSuchRoute(in_context(_no_such_route, UNMATCHED, observe)))


async def _no_such_route(request: web.Request) -> NoReturn:
    # Which methods the path has, as aiohttp's router gathers them while it looks.
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if not isinstance(resource, NoSuchRoute):
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


class NoSuchRoute(web.AbstractResource):
    """The router's last resource: it takes every request that no route took.

    Indexed with ``/``, which the router tries last for every path. It lists
    no routes (``router.routes()`` shows what the app serves, not this).
    """

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self._route = web.ResourceRoute("*", handler, self)

    @property
    def canonical(self) -> str:
        """``/``: where the router looks last."""
        return "/"

    def url_for(self, **kwargs: str) -> URL:
        """No URL leads to it."""
        raise RuntimeError("no URL leads to 'no such route'")

    async def resolve(self, request: web.Request) -> tuple[web.UrlMappingMatchInfo, set[str]]:
        """Every request: its handler answers 404 or 405."""
        return web.UrlMappingMatchInfo({}, self._route), set()

    def add_prefix(self, prefix: str) -> None:
        """The app is never mounted under a prefix."""
        raise RuntimeError("keyledger's app is not a sub-application")

    def get_info(self) -> _InfoDict:
        """Nothing to tell about it."""
        return {}

    def raw_match(self, path: str) -> bool:
        """No route path is this resource's (a route added after it gets a resource of its own)."""
        return False

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        return iter(())
