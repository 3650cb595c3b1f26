"""Records tests: a module database with the fixture schema (authors, posts, labels, ...) loaded first.

The tests of the pipeline's stages need no database: their modules are marked `no_postgres`, and a test so
marked that would start Postgres (through any fixture, autouse ones included) fails instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.support.app import services_of
from tests.support.postgres import TestCluster

FIXTURE_SQL = (Path(__file__).parent / "fixture_schema.sql").read_text()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "no_postgres: a test of pure code, which must not start Postgres")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("no_postgres") is not None and "cluster" in getattr(item, "fixturenames", ()):
        pytest.fail(f"{item.nodeid} is marked no_postgres, but its fixtures start Postgres", pytrace=False)


@pytest.fixture(scope="module")
def database_url(cluster: TestCluster) -> str:
    url = cluster.create_database("records")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FIXTURE_SQL)
    return url


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    """Headers that carry the project's API key (runs as project_admin)."""
    keys = json.loads((services_of(client).core.settings.data_dir / "keys.json").read_text())
    return {"Authorization": f"Bearer {keys['api_key']}"}


@pytest.fixture(scope="module")
def anon(client: TestClient) -> dict[str, str]:
    keys = json.loads((services_of(client).core.settings.data_dir / "keys.json").read_text())
    return {"Authorization": f"Bearer {keys['anon_key']}"}
