"""`/mcp` is built after the app starts: the rest of the API answers meanwhile, a call that comes early waits
for the server and is served, and a server that could not be built is a 503 that says where to look."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from kilnbase.keys.project_keys import load_project_keys
from kilnbase.mcp_server.endpoint import McpEndpoint

LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def mcp_endpoint(app: Any) -> McpEndpoint:
    (endpoint,) = (
        route.endpoint for route in app.router.routes if isinstance(route, Route) and route.path == "/mcp"
    )
    assert isinstance(endpoint, McpEndpoint)
    return endpoint


@pytest.fixture
def app_with_build(settings: Settings) -> Iterator[Callable[[Callable[[], Any]], TestClient]]:
    """The whole app, its MCP server built by a wrapper around the real build (given the real one)."""
    opened: list[TestClient] = []

    def start(wrap: Callable[[Callable[[], Any]], Callable[[], Any]]) -> TestClient:
        app = create_app(settings)
        endpoint = mcp_endpoint(app)
        endpoint.build = wrap(endpoint.build)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield start  # type: ignore[misc]
    for client in opened:
        client.__exit__(None, None, None)


def api_key(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {load_project_keys(settings).api_key}", **MCP_HEADERS}


def test_the_api_answers_while_mcp_is_built_and_an_early_call_waits_for_it(
    app_with_build: Callable[..., TestClient], settings: Settings
) -> None:
    release = threading.Event()

    def held(build: Callable[[], Any]) -> Callable[[], Any]:
        def build_when_released() -> Any:
            assert release.wait(30)
            return build()

        return build_when_released

    client = app_with_build(held)
    with ThreadPoolExecutor(1) as pool:
        early = pool.submit(client.post, "/mcp", json=LIST_TOOLS, headers=api_key(settings))
        health = client.get("/api/health")
        assert health.status_code == 200
        time.sleep(0.3)  # (time for the early call to reach /mcp: it must then wait, not be refused)
        assert not early.done()
        release.set()
        response = early.result(timeout=60)
    assert response.status_code == 200
    names = {tool["name"] for tool in response.json()["result"]["tools"]}
    assert {"run-raw-sql", "list-tables"} <= names


def test_a_server_that_could_not_be_built_is_a_503_saying_where_to_look(
    app_with_build: Callable[..., TestClient], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_build: Callable[[], Any]) -> Callable[[], Any]:
        def fail() -> Any:
            raise RuntimeError("no tools today")

        return fail

    client = app_with_build(broken)
    response = client.post("/mcp", json=LIST_TOOLS, headers=api_key(settings))
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "MCP_UNAVAILABLE"
    assert "log" in body["nextActions"]
    assert any("MCP server could not be built" in r.getMessage() for r in caplog.records)
    assert client.get("/api/health").status_code == 200  # the rest of the API is unaffected


class _FailsToStart:
    """A session manager whose `run()` fails as it is entered (as the SDK's would, given a broken set-up)."""

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        raise RuntimeError("the transport cannot start")
        yield  # pragma: no cover


def test_a_server_that_fails_as_it_starts_is_a_503_and_is_logged_at_once(
    app_with_build: Callable[..., TestClient], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    client = app_with_build(lambda _build: _FailsToStart)
    response = client.post("/mcp", json=LIST_TOOLS, headers=api_key(settings))
    assert response.status_code == 503
    assert response.json()["error"] == "MCP_UNAVAILABLE"
    assert any("MCP server stopped" in r.getMessage() for r in caplog.records)


def test_no_credential_is_401_even_before_the_server_is_ready(
    app_with_build: Callable[..., TestClient],
) -> None:
    release = threading.Event()

    def held(build: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: release.wait(30) and build()

    client = app_with_build(held)
    try:
        response = client.post("/mcp", json=LIST_TOOLS, headers=MCP_HEADERS)
        assert response.status_code == 401
        assert response.json()["error"] == "AUTH_INVALID_CREDENTIALS"
    finally:
        release.set()


def test_outside_the_apps_lifespan_the_endpoint_is_a_503(settings: Settings) -> None:
    app = create_app(settings)
    client = TestClient(app, raise_server_exceptions=False)  # (not entered: no lifespan)
    response = client.post("/mcp", json=LIST_TOOLS, headers=api_key(settings))
    assert response.status_code == 503
    assert response.json()["error"] == "MCP_UNAVAILABLE"
