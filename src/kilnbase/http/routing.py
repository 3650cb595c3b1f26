"""Starlette's router, minus its linear scan: a request is matched only against routes that can fit its path.

Starlette tries every route's regex in order until one matches, so with some fifty routes a request to the
last ones pays fifty regex matches before its handler runs. Every route's path begins with literal
segments (`/api/database/records/` before `{table}`); a route can only match a path that starts with them.
`IndexedRouter` keeps, for the first few segments of a request path, the routes whose literal segments
agree, in their original order, and tries those. The first full match is therefore the one Starlette would
find; anything else (405, 404, the trailing-slash redirect) is left to Starlette's own scan, unchanged.

A plain route's full match is then remembered by method and path: the same request again (the same table,
the same object) skips the candidates and the route's regex and takes its parameters from the memo.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import Receive, Scope, Send

#: How many leading path segments select the candidate routes.
INDEX_DEPTH = 3
#: Distinct request prefixes (and matched paths) remembered; each memo empties when full (request paths are
#: the client's choice).
MEMO_SIZE = 4096
#: Longest path whose match is remembered, so that the memo's size stays small whatever the paths.
MEMO_PATH_CHARS = 256


def literal_segments(route: BaseRoute) -> tuple[str, ...]:
    """The path segments every path this route matches begins with (none for routes without a path)."""
    if isinstance(route, Route):
        path = route.path
    elif isinstance(route, Mount):
        path = route.path + "/{path}"  # a mount matches its prefix followed by anything
    else:
        return ()
    literal, brace, _ = path.partition("{")
    segments = literal.split("/")[1:]
    if brace:
        segments = segments[:-1]  # the segment the first parameter sits in is not literal
    return tuple(segments[:INDEX_DEPTH])


class IndexedRouter(Router):
    def __init__(self, routes: Sequence[BaseRoute], **kwargs: Any) -> None:
        super().__init__(routes, **kwargs)
        self._memo: dict[tuple[str, ...], list[BaseRoute]] = {}
        #: (method, path) -> the plain route that fully matched it, and its path parameters.
        self._matched: dict[tuple[str, str], tuple[Route, dict[str, Any]]] = {}
        self._indexed: tuple[BaseRoute, ...] = ()
        self._keys: tuple[tuple[str, ...], ...] = ()

    def _index(self) -> None:
        """Index the routes again when some were added after construction."""
        if len(self._indexed) != len(self.routes):
            self._indexed = tuple(self.routes)
            self._keys = tuple(literal_segments(route) for route in self._indexed)
            self._memo.clear()
            self._matched.clear()

    def candidates(self, route_path: str) -> list[BaseRoute]:
        """The routes, in order, whose literal segments agree with the start of `route_path`."""
        self._index()
        prefix = tuple(route_path.split("/", INDEX_DEPTH + 1)[1 : INDEX_DEPTH + 1])
        found = self._memo.get(prefix)
        if found is None:
            found = [
                route
                for route, key in zip(self._indexed, self._keys, strict=True)
                if key == prefix[: len(key)]
            ]
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[prefix] = found
        return found

    # `__call__` and `app` are not coroutines: they hand the request on, so that they are not two more
    # frames that every resumption of the request's task passes through.

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:  # type: ignore[override]
        return self.middleware_stack(scope, receive, send)

    def app(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:  # type: ignore[override]
        if scope["type"] == "http":
            route_path = get_route_path(scope)
            # (Remembered for a request that brings no parameters of its own: a top-level one.)
            key = (scope["method"], route_path) if "path_params" not in scope else None
            self._index()
            found = self._matched.get(key) if key is not None else None
            if found is not None:
                known, params = found
                if "router" not in scope:
                    scope["router"] = self
                scope["route"] = known
                scope["endpoint"] = known.endpoint
                scope["path_params"] = dict(params)  # (a copy: the request may change its own)
                return known.app(scope, receive, send)
            for route in self.candidates(route_path):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    if "router" not in scope:
                        scope["router"] = self
                    scope["route"] = route
                    scope.update(child_scope)
                    if type(route) is Route:
                        if key is not None and len(route_path) <= MEMO_PATH_CHARS:
                            if len(self._matched) >= MEMO_SIZE:
                                self._matched.clear()
                            self._matched[key] = (route, dict(child_scope["path_params"]))
                        # A full match has an allowed method, for which `Route.handle` only awaits this.
                        return route.app(scope, receive, send)
                    return route.handle(scope, receive, send)
        return super().app(scope, receive, send)
