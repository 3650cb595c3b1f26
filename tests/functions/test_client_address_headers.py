"""A function reads the client's address from `X-Forwarded-For` and `X-Real-IP`, and those say what Kilnbase
decided (`http.client_address`), never what the client wrote: otherwise a function that limits or logs by
address is fooled by one header. Behind a trusted proxy the chain it vouches for is passed on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from kilnbase.app import KilnbaseApp, create_app
from kilnbase.config import FunctionsSettings, Settings

SHOW_ADDRESS = (
    "export default (req: Request) => Response.json(Object.fromEntries("
    "['x-forwarded-for', 'x-real-ip', 'forwarded', 'true-client-ip'].map((n) => [n, req.headers.get(n)])));"
)
#: The test's own header naming the TCP peer a request comes from (read, then removed, below the app).
PEER = "x-test-peer"


class _PeerFromHeader:
    """The test transport's peer, set per request, so that one in-process app sees clients and proxies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(name, value) for name, value in scope["headers"] if name != PEER.encode()]
            peer = dict(scope["headers"]).get(PEER.encode())
            scope = {**scope, "headers": headers}
            if peer is not None:
                scope["client"] = (peer.decode(), 40000)
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        trusted_proxies="10.0.0.0/8",  # (the environment's form)
        functions=FunctionsSettings(timeout_ms=3000, workers_per_function=1, memory_mb=64, max_concurrency=4),
    )


@pytest.fixture(scope="module")
def app(settings: Settings) -> KilnbaseApp:
    return create_app(settings)


@pytest.fixture(scope="module")
def client(app: KilnbaseApp) -> Iterator[TestClient]:
    with TestClient(_PeerFromHeader(app), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def admin(app: KilnbaseApp) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.services.core.keys.ring.current('api_key')}"}


@pytest.fixture(scope="module")
def show_address(client: TestClient, admin: dict[str, str]) -> str:
    response = client.post(
        "/api/functions",
        json={"name": "show-address", "slug": "show-address", "code": SHOW_ADDRESS},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    return "show-address"


def _seen(client: TestClient, slug: str, **headers: str) -> dict[str, str | None]:
    response = client.get(f"/functions/{slug}", headers=headers)
    assert response.status_code == 200, response.text
    seen: dict[str, str | None] = response.json()
    return seen


def test_a_client_cannot_name_its_own_address(client: TestClient, show_address: str) -> None:
    seen = _seen(
        client,
        show_address,
        **{
            PEER: "203.0.113.5",
            "x-forwarded-for": "1.2.3.4",
            "x-real-ip": "1.2.3.4",
            "forwarded": "for=1.2.3.4",
            "true-client-ip": "1.2.3.4",
        },
    )
    assert seen == {
        "x-forwarded-for": "203.0.113.5",
        "x-real-ip": "203.0.113.5",
        "forwarded": None,
        "true-client-ip": None,
    }


def test_a_trusted_proxy_passes_the_chain_it_vouches_for(client: TestClient, show_address: str) -> None:
    # The client forged a first hop; our proxies 10.0.0.3 then 10.0.0.2 saw 198.51.100.7.
    seen = _seen(
        client,
        show_address,
        **{PEER: "10.0.0.2", "x-forwarded-for": "6.6.6.6, 198.51.100.7, 10.0.0.3", "x-real-ip": "6.6.6.6"},
    )
    assert seen["x-forwarded-for"] == "198.51.100.7, 10.0.0.3, 10.0.0.2"
    assert seen["x-real-ip"] == "198.51.100.7"
