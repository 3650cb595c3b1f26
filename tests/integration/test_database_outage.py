"""The database goes away while the server runs, and comes back: requests are answered 503 at once (never a
500, a 400 or a 30 s wait), health says so, and the server serves again soon after the database is back.

The app reaches the session's cluster through a TCP forwarder the test cuts and restores."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from psycopg.conninfo import make_conninfo
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.support.app import admin_headers, anon_headers
from tests.support.postgres import TestCluster
from tests.support.tcp_proxy import TcpProxy

#: Far below the pool's 30 s wait that a request used to sit out before it failed.
PROMPT_SECONDS = 10


@pytest.fixture(scope="module")
def proxy(cluster: TestCluster) -> Iterator[TcpProxy]:
    assert cluster.server.port is not None
    forwarder = TcpProxy("127.0.0.1", cluster.server.port)
    yield forwarder
    forwarder.cut()


@pytest.fixture(scope="module")
def client(
    cluster: TestCluster, proxy: TcpProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    url = make_conninfo(cluster.create_database("outage"), host="127.0.0.1", port=proxy.port)
    settings = Settings(database_url=url, data_dir=tmp_path_factory.mktemp("outage"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        made = test_client.post(
            "/api/database/advance/rawsql",
            headers=admin_headers(test_client),
            json={"query": "create table public.notes (id int primary key); grant select on notes to anon"},
        )
        assert made.status_code == 200, made.text
        yield test_client


def _timed(call: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()  # type: ignore[operator]
    return response, time.monotonic() - started


def _wait_until_healthy(client: TestClient, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while (health := client.get("/api/health")).status_code != 200:
        assert time.monotonic() < deadline, f"not healthy again in time: {health.text}"
        time.sleep(0.05)


@pytest.fixture
def outage(client: TestClient, proxy: TcpProxy) -> Iterator[None]:
    _wait_until_healthy(client)  # (a pool that has connections to lose)
    proxy.cut()
    try:
        yield
    finally:
        proxy.restore()
        _wait_until_healthy(client)


def test_every_surface_answers_503_at_once_while_the_database_is_gone(
    client: TestClient, outage: None
) -> None:
    admin, anon = admin_headers(client), anon_headers(client)
    calls = {
        "records": lambda: client.get("/api/database/records/notes", headers=admin),
        "records again": lambda: client.get("/api/database/records/notes", headers=anon),
        "tables": lambda: client.get("/api/database/tables", headers=admin),
        "buckets": lambda: client.get("/api/storage/buckets", headers=admin),
        "sign-in": lambda: client.post(
            "/api/auth/sessions", headers=anon, json={"email": "a@example.com", "password": "not-a-secret-1"}
        ),
    }
    for name, call in calls.items():
        response, seconds = _timed(call)
        assert response.status_code == 503, (name, response.status_code, response.text)
        assert seconds < PROMPT_SECONDS, (name, seconds)
        assert response.headers.get("retry-after"), name
        assert "Traceback" not in response.text
    records = client.get("/api/database/records/notes", headers=admin).json()
    assert records["code"] == "PGRST000"
    assert records["message"] == "Database connection error. Retrying the connection."  # (PostgREST's)
    tables = client.get("/api/database/tables", headers=admin).json()
    assert tables["error"] == "DATABASE_UNAVAILABLE"
    health, seconds = _timed(lambda: client.get("/api/health"))
    assert health.status_code == 503 and seconds < PROMPT_SECONDS
    assert health.json()["checks"]["database"]["status"] == "unavailable"
    assert health.json()["checks"]["database"]["since"].endswith("Z")


def test_the_server_serves_again_soon_after_the_database_is_back(client: TestClient, proxy: TcpProxy) -> None:
    admin = admin_headers(client)
    _wait_until_healthy(client)
    proxy.cut()
    try:
        assert client.get("/api/database/records/notes", headers=admin).status_code == 503
    finally:
        proxy.restore()
    deadline = time.monotonic() + 15
    while (answer := client.get("/api/database/records/notes", headers=admin)).status_code != 200:
        assert answer.status_code == 503, answer.text
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.05)
    assert client.get("/api/health").json()["checks"]["database"]["status"] == "ok"
