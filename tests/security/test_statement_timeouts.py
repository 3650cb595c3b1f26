"""Each request role has its own statement timeout, and a query is cancelled when its client goes away."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.config import Settings
from tests.security.conftest import OwnerSql
from tests.support.app import user_headers
from tests.support.postgres import TestCluster
from tests.support.servers import ServerProcess


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        db_anon_statement_timeout="200ms",
        db_authenticated_statement_timeout="5s",
        db_admin_statement_timeout="300ms",
    )


NAP = """
create function public.nap(seconds float8) returns text language plpgsql as $$
begin
    perform pg_sleep(seconds);
    return 'awake';
end $$;
grant execute on function public.nap(float8) to anon, authenticated;
"""


@pytest.fixture(scope="module", autouse=True)
def nap(owner_sql: OwnerSql) -> None:
    owner_sql(NAP)


def test_anon_statements_stop_at_the_anon_timeout(client: TestClient, anon: dict[str, str]) -> None:
    started = time.monotonic()
    response = client.post("/api/database/rpc/nap", json={"seconds": 3}, headers=anon)
    assert time.monotonic() - started < 2.5
    assert response.status_code == 500, response.text  # PostgREST answers a cancelled statement with 500
    assert response.json()["code"] == "57014"


def test_a_signed_in_user_has_a_longer_timeout(client: TestClient) -> None:
    headers = user_headers(client, str(uuid.uuid4()), "napper@example.com")
    response = client.post("/api/database/rpc/nap", json={"seconds": 0.5}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == "awake"


def test_raw_sql_stops_at_the_admin_timeout(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        "/api/database/advance/rawsql", json={"query": "select pg_sleep(3)"}, headers=admin
    )
    assert response.status_code == 400, response.text
    assert "timeout" in response.json()["nextActions"]


@pytest.fixture(scope="module")
def server(cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    url = cluster.create_database("cancel")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(NAP)
    process = ServerProcess(
        tmp_path_factory.mktemp("cancel") / "data",
        env={"DATABASE_URL": url, "KILNBASE_DB_ADMIN_STATEMENT_TIMEOUT": "60s"},
    )
    process.start()
    process.env["TEST_OWNER_URL"] = url
    yield process
    process.stop()


def _sleeping(owner_url: str) -> int:
    with psycopg.connect(owner_url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where state = 'active' and query like '%%nap%%' "
            "and pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_query_is_cancelled_when_its_client_goes_away(server: ServerProcess) -> None:
    api_key = (server.data_dir / "keys.json").read_text().split('"api_key": "')[1].split('"')[0]
    owner_url = server.env["TEST_OWNER_URL"]
    request = (
        "GET /api/database/rpc/nap?seconds=30 HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {api_key}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        client.sendall(request.encode())
        deadline = time.monotonic() + 10
        while _sleeping(owner_url) == 0:
            assert time.monotonic() < deadline, "the query never started"
            time.sleep(0.05)
    deadline = time.monotonic() + 5
    while _sleeping(owner_url) > 0:
        assert time.monotonic() < deadline, "the query kept running after its client left"
        time.sleep(0.05)
