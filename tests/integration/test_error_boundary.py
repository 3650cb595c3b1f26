"""Every request's one error boundary (`http.errors.ErrorBoundary`, in the request-context layer): what a
client gets when a route fails, whatever kind of route it is, with or without CORS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from kilnbase.app import KilnbaseApp, create_app
from kilnbase.config import Settings
from kilnbase.http.errors import ApiError

_ORIGIN = {"Origin": "http://app.example"}


class Boom(RuntimeError):
    pass


async def fails_unexpectedly(_request: Request) -> Response:
    raise Boom("secret detail that must not reach the client")


class Asgi:
    """A plain ASGI endpoint (an instance, so that Starlette's `Route` does not wrap it), as the records
    routes are."""

    def __init__(self, fail: Callable[[Send], Awaitable[None]]) -> None:
        self.fail = fail

    async def __call__(self, _scope: Scope, _receive: Receive, send: Send) -> None:
        await self.fail(send)


async def asgi_fails_unexpectedly(_send: Send) -> None:
    raise Boom("secret detail that must not reach the client")


async def asgi_refuses(_send: Send) -> None:
    raise ApiError(409, "ALREADY_EXISTS", "It is there already.", "Pick another name.")


async def fails_after_starting(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise Boom("too late to answer")


def app_with_failing_routes(settings: Settings) -> KilnbaseApp:
    app = create_app(settings)
    app.router.routes.extend(
        [
            Route("/test/fails", fails_unexpectedly),
            Route("/test/asgi-fails", Asgi(asgi_fails_unexpectedly)),
            Route("/test/asgi-refuses", Asgi(asgi_refuses)),
            Route("/test/fails-late", Asgi(fails_after_starting)),
        ]
    )
    return app


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(app_with_failing_routes(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/test/fails", "/test/asgi-fails"])
def test_an_unexpected_error_is_a_bare_500_in_insforge_shape(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "INTERNAL_ERROR" and body["statusCode"] == 500
    assert "secret detail" not in response.text


@pytest.mark.parametrize("path", ["/test/fails", "/test/asgi-fails"])
def test_an_unexpected_error_still_reaches_the_server_to_be_logged(settings: Settings, path: str) -> None:
    # (No lifespan: these routes need none, and the module's app has run its own.)
    raising = TestClient(app_with_failing_routes(settings), raise_server_exceptions=True)
    with pytest.raises(Boom):
        raising.get(path)


def test_an_api_error_from_a_plain_asgi_route_is_its_answer(client: TestClient) -> None:
    response = client.get("/test/asgi-refuses")
    assert response.status_code == 409
    assert response.json() == {
        "error": "ALREADY_EXISTS",
        "message": "It is there already.",
        "statusCode": 409,
        "nextActions": "Pick another name.",
    }


@pytest.mark.parametrize(
    ("path", "status"), [("/api/no/such/thing", 404), ("/test/asgi-refuses", 409), ("/test/fails", 500)]
)
def test_a_browser_gets_cors_headers_on_an_error_too(client: TestClient, path: str, status: int) -> None:
    response = client.get(path, headers=_ORIGIN)
    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] == "http://app.example"
    assert response.headers["access-control-allow-credentials"] == "true"


def test_an_error_after_the_response_started_adds_nothing_to_it(client: TestClient) -> None:
    response = client.get("/test/fails-late")
    assert response.status_code == 200
    assert response.text == "partial"
