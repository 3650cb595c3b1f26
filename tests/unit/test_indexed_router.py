"""The indexed router picks exactly the route Starlette's linear scan would, for every path shape."""

from __future__ import annotations

import asyncio
import re
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from kilnbase.http.routing import MEMO_PATH_CHARS, MEMO_SIZE, IndexedRouter, literal_segments


def _scan(routes: list[BaseRoute], path: str, method: str) -> tuple[BaseRoute | None, Match]:
    """Starlette's own choice: the first full match, else the first partial one."""
    scope = {"type": "http", "path": path, "root_path": "", "method": method}
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route, Match.FULL
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial, Match.PARTIAL if partial else Match.NONE


def _indexed(router: IndexedRouter, path: str, method: str) -> BaseRoute | None:
    scope = {"type": "http", "path": path, "root_path": "", "method": method}
    for route in router.candidates(path):
        if route.matches(scope)[0] is Match.FULL:
            return route
    return None


def _paths(routes: list[BaseRoute]) -> list[str]:
    """Every route's path with its parameters filled in several ways, plus near misses."""
    paths = {"/", "", "/api", "/api/", "/nope", "/api/database/records", "/api/database/records/"}
    for route in routes:
        if not isinstance(route, Route | Mount):
            continue
        template = route.path + ("/{rest}" if isinstance(route, Mount) else "")
        for fill in ("x", "rpc", "a.b", "records", "with space", ""):
            path = re.sub(r"\{[^}]*\}", fill, template)
            paths.update({path, path + "/", path.rstrip("/"), path + "/extra", path[:-1]})
    return sorted(paths)


@pytest.fixture(scope="module")
def app_router(tmp_path_factory: pytest.TempPathFactory) -> object:
    settings = Settings(data_dir=tmp_path_factory.mktemp("router"), database_url="postgresql://unused/db")
    return create_app(settings).router


@pytest.fixture(scope="module")
def app_routes(app_router: IndexedRouter) -> list[BaseRoute]:
    return list(app_router.routes)


def test_the_app_uses_the_indexed_router(app_router: object) -> None:
    assert isinstance(app_router, IndexedRouter) and len(app_router.routes) > 20


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE", "OPTIONS"])
def test_same_route_as_a_linear_scan_for_every_path_of_the_app(
    app_routes: list[BaseRoute], method: str
) -> None:
    router = IndexedRouter(app_routes)
    for path in _paths(app_routes):
        expected, kind = _scan(app_routes, path, method)
        assert _indexed(router, path, method) is (expected if kind is Match.FULL else None), path


def test_literal_segments_stop_at_the_first_parameter() -> None:
    def endpoint() -> None:
        return None

    assert literal_segments(Route("/api/database/records/{table}", endpoint)) == (
        "api",
        "database",
        "records",
    )
    assert literal_segments(Route("/api/da{x}", endpoint)) == ("api",)
    assert literal_segments(Route("/api/health", endpoint)) == ("api", "health")
    assert literal_segments(Route("/a/b/c/d/e", endpoint)) == ("a", "b", "c")
    assert literal_segments(Mount("/static", routes=[])) == ("static",)
    assert literal_segments(Mount("", routes=[])) == ()


def test_misses_still_get_starlettes_405_404_and_slash_redirect(tmp_path: Path) -> None:
    def ok(_request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette()
    app.router = IndexedRouter(
        [
            Route("/api/items/{id}", ok, methods=["GET"]),
            Route("/api/items/{id}/", ok, methods=["POST"]),
            Route("/api/things", ok),
        ]
    )
    client = TestClient(app)
    assert client.get("/api/items/1").text == "ok"
    assert client.post("/api/items/1").status_code == 405  # partial match, as Starlette answers it
    assert client.get("/api/other").status_code == 404
    redirected = client.get("/api/items/1/", follow_redirects=False)
    assert redirected.status_code == 405  # the slash route matches the path, not the method
    redirected = client.get("/api/things/", follow_redirects=False)
    assert redirected.status_code == 307 and redirected.headers["location"].endswith("/api/things")
    app.router.routes.append(Route("/late", ok))  # a route added later is indexed too
    assert client.get("/late").text == "ok"


def _get_each(app: Starlette, paths: list[str]) -> list[bytes]:
    """GET each path straight through ASGI, and the bodies: TestClient hands every request to another thread,
    which made the 4,097 requests that fill the router's memory take 24 s."""

    async def one(path: str) -> bytes:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [],
            "client": ("testclient", 50000),
            "server": ("testserver", 80),
        }
        body: list[bytes] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await app(scope, receive, send)
        return b"".join(body)

    async def each() -> list[bytes]:
        return [await one(path) for path in paths]

    return asyncio.run(each())


def test_a_remembered_match_gives_the_same_route_and_its_own_parameters() -> None:
    seen: list[dict[str, object]] = []

    def item(request: Request) -> PlainTextResponse:
        seen.append(dict(request.path_params))
        request.path_params["id"] = "changed by the route"  # must not reach the next request
        return PlainTextResponse(f"item {request.path_params}")

    def long_item(request: Request) -> PlainTextResponse:
        return PlainTextResponse("long")

    app = Starlette()
    router = IndexedRouter(
        [Route("/api/items/{id}", item, methods=["GET"]), Route("/api/long/{rest:path}", long_item)]
    )
    app.router = router
    client = TestClient(app)
    for _ in range(3):
        assert client.get("/api/items/7").status_code == 200
    assert seen == [{"id": "7"}] * 3
    assert router._matched.keys() == {("GET", "/api/items/7")}
    # A method the route does not allow is Starlette's 405 every time, and not remembered.
    assert [client.post("/api/items/7").status_code for _ in range(2)] == [405, 405]
    assert client.get("/api/items/8").status_code == 200 and seen[-1] == {"id": "8"}
    # A long path is matched, not remembered; the memory empties when full.
    assert client.get("/api/long/" + "x" * MEMO_PATH_CHARS).text == "long"
    assert ("GET", "/api/long/" + "x" * MEMO_PATH_CHARS) not in router._matched
    assert set(_get_each(app, [f"/api/long/{index}" for index in range(MEMO_SIZE + 1)])) == {b"long"}
    assert len(router._matched) <= MEMO_SIZE
    # A route added later can take a path over from a remembered one, as Starlette's scan would.
    router.routes.insert(0, Route("/api/items/7", long_item))
    assert client.get("/api/items/7").text == "long"
