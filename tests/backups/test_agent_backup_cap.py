"""An agent key keeps at most `KILNBASE_BACKUPS_AGENT_MAX` backups: it makes them without a person, each a
full copy of the database on disk, and deletes one only with a person's approval. Here the bound is 2."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.config import Settings
from tests.support.app import admin_headers, agent_headers

API = "/api/database/backups"


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"), backups_agent_max=2)


def _made(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    created = client.post(API, headers=headers, json={})
    assert created.status_code == 201, created.text
    admin = admin_headers(client)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = client.get(API, headers=admin).json()["backups"]
        row: dict[str, Any] = next(r for r in rows if r["id"] == created.json()["id"])
        if row["status"] != "running":
            assert row["status"] == "completed", row
            return row
        time.sleep(0.2)
    raise AssertionError("the backup did not finish")


def test_an_agent_key_keeps_at_most_the_bound(client: TestClient, settings: Settings) -> None:
    admin = admin_headers(client)
    agent = agent_headers(client, admin, ["database:write"])
    first = _made(client, agent)
    _made(client, agent)
    refused = client.post(API, headers=agent, json={})
    assert refused.status_code == 403, refused.text
    assert "KILNBASE_BACKUPS_AGENT_MAX=2" in refused.json()["message"]
    assert len(client.get(API, headers=admin).json()["backups"]) >= 2
    audits = client.get("/api/logs/audits", params={"module": "DATABASE"}, headers=admin).json()
    assert any(a["action"] == "CREATE_DATABASE_BACKUP" and a["outcome"] == "refused" for a in audits)

    # People are not bound, nor is another agent key; a failed backup is no copy and does not count.
    _made(client, admin)
    _made(client, agent_headers(client, admin, ["database:write"]))
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("update system.database_backups set status = 'failed' where id = %s", (first["id"],))
    _made(client, agent)
