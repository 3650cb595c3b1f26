"""Scheduled backups in the server's background: a due fire is taken (once) and makes a backup, and
retention deletes old scheduled backups with their files, never manual ones."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from starlette.testclient import TestClient

from kilnbase.config import Settings
from tests.support.app import admin_headers

API = "/api/database/backups"


def _sql(settings: Settings, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def test_a_due_fire_makes_a_backup_and_retention_prunes(client: TestClient, settings: Settings) -> None:
    admin = admin_headers(client)
    folder = settings.data_dir / "backups"
    folder.mkdir(exist_ok=True)
    for key in ("old-scheduled.tar", "old-manual.tar"):
        (folder / key).write_bytes(b"x")
    _sql(
        settings,
        "insert into system.database_backups (trigger_source, status, storage_key, created_at) values "
        "('scheduled', 'completed', 'old-scheduled.tar', now() - interval '8 days'), "
        "('manual', 'completed', 'old-manual.tar', now() - interval '80 days')",
    )
    body = {"enabled": True, "cronSchedule": "0 3 * * *", "retentionDays": 7}
    assert client.patch(f"{API}/config", headers=admin, json=body).status_code == 200
    _sql(settings, "update system.database_config set backup_next_at = now() - interval '1 second'")
    _sql(settings, "select pg_notify('kilnbase_database_backups', '')")
    # (A fire that finds the work lock taken is tried a minute later: the wait allows for one such retry.)
    deadline = time.monotonic() + 150
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        listed = client.get(API, headers=admin).json()["backups"]
        rows = [r for r in listed if r["triggerSource"] == "scheduled"]
        if len(rows) == 1 and rows[0]["sizeBytes"]:
            break
        time.sleep(0.3)
    assert len(rows) == 1 and rows[0]["status"] == "completed" and rows[0]["createdBy"] is None
    assert rows[0]["expiresAt"] is not None
    assert _sql(settings, "select backup_next_at > now() from system.database_config") == [(True,)]
    # The old scheduled backup went with its file (retention prunes after the fire's backup, its row then its
    # file: wait for both); a manual one is never pruned.
    while (folder / "old-scheduled.tar").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (folder / "old-scheduled.tar").exists() and (folder / "old-manual.tar").exists()
    left = _sql(settings, "select storage_key from system.database_backups where storage_key like 'old-%%'")
    assert left == [("old-manual.tar",)]
    client.patch(f"{API}/config", headers=admin, json={"enabled": False})
