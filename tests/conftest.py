"""Shared fixtures: a real embedded Postgres per session, a fresh migrated database and app per module."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.support.postgres import TestCluster
from tests.support.servers import ServerProcess

# No functions host (port 7133) for every app and server the tests start: the tests of the host give it a
# free port of their own.
os.environ.setdefault("KILNBASE_FUNCTIONS_HOST_PORT", "0")


@pytest.fixture(scope="session")
def cluster() -> Iterator[TestCluster]:
    test_cluster = TestCluster()
    yield test_cluster
    test_cluster.close()


@pytest.fixture(scope="module")
def database_url(cluster: TestCluster) -> str:
    """A fresh database (all migrations applied) for this test module."""
    return cluster.create_database()


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    """The whole app, lifespan included, in-process."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parts[-2] == "compat":
            item.add_marker(pytest.mark.compat)


@pytest.fixture(scope="module")
def live_server(cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real `kilnbase serve` process on a free port, over a fresh database of the session's cluster."""
    server = ServerProcess(
        tmp_path_factory.mktemp("live") / "data", env={"DATABASE_URL": cluster.create_database("live")}
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live_keys(live_server: ServerProcess) -> dict[str, str]:
    """`{url, apiKey, anonKey}` of the live server, as `kilnbase keys` prints them."""
    stored = json.loads((live_server.data_dir / "keys.json").read_text())
    return {"url": live_server.url, "apiKey": stored["api_key"], "anonKey": stored["anon_key"]}
