"""Rotating the key of encrypted columns: an operator raises `KILNBASE_COLUMN_KEY_VERSION` (here: a second
app over the same database and key file), then `POST /api/database/encryption/rotate` rewrites every value
written under an older version. Its own module: a rotation rewrites every encrypted column of the database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from kilnbase.database_encryption.definitions import NOTHING_TO_ROTATE, rotation_summary
from tests.database.conftest import NewName
from tests.database.test_column_encryption import ENCRYPTION, RECORDS, make_table, raw_rows
from tests.support.app import admin_headers


@pytest.fixture(scope="module")
def rotated(settings: Settings) -> Iterator[TestClient]:
    """The same project (database and keys) served with key version 2."""
    with TestClient(
        create_app(settings.model_copy(update={"column_key_version": 2})), raise_server_exceptions=False
    ) as test_client:
        yield test_client


def insert_rows(client: TestClient, admin: dict[str, str], table: str, rows: list[dict[str, Any]]) -> None:
    response = client.post(f"{RECORDS}/{table}", json=rows, headers=admin)
    assert response.status_code == 201, response.text


def test_rotation_rewrites_older_values_under_the_current_version(
    client: TestClient, admin: dict[str, str], rotated: TestClient, new_name: NewName
) -> None:
    table = new_name("vault")
    make_table(client, admin, table)
    insert_rows(client, admin, table, [{"ssn": f"s{i}", "age": i} for i in range(3)])
    before = raw_rows(client, admin, f"select ssn, updated_at from {table} order by ssn")
    assert all(row["ssn"].startswith("v1:") for row in before)

    rotated_admin = admin_headers(rotated)
    answer = rotated.post(f"{ENCRYPTION}/rotate", headers=rotated_admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    mine = {d["column"]: d["rowsReEncrypted"] for d in body["details"] if d["table"] == f"public.{table}"}
    assert mine == {"ssn": 3, "age": 3, "meta": 0, "ok": 0}
    assert body["success"] is True and body["totalReEncrypted"] >= 6
    assert body["message"].startswith(f"Re-encrypted {body['totalReEncrypted']} rows across ")

    after = raw_rows(client, admin, f"select ssn, updated_at from {table} order by ssn")
    assert all(row["ssn"].startswith("v2:") for row in after)
    assert [row["updated_at"] for row in after] == [row["updated_at"] for row in before]  # triggers off
    expected = [{"ssn": f"s{i}", "age": i} for i in range(3)]
    for app, headers in ((rotated, rotated_admin), (client, admin)):  # version 1's server still reads them
        read = app.get(f"{RECORDS}/{table}?select=ssn,age&name=is.null", headers=headers).json()
        assert sorted(read, key=lambda r: r["ssn"]) == expected
    listed = client.get(ENCRYPTION, headers=admin).json()["encryptedColumns"]
    assert {c["key_version"] for c in listed if c["table_name"] == table} == {2}

    again = rotated.post(f"{ENCRYPTION}/rotate", headers=rotated_admin).json()
    assert [d["rowsReEncrypted"] for d in again["details"] if d["table"] == f"public.{table}"] == [0, 0, 0, 0]


def test_a_value_that_cannot_be_decrypted_stops_its_column_with_a_409(
    client: TestClient, admin: dict[str, str], rotated: TestClient, new_name: NewName
) -> None:
    table = new_name("forged")
    make_table(client, admin, table)
    insert_rows(client, admin, table, [{"ssn": "real"}])
    forged = "v1:" + "0" * 32 + ":" + "0" * 32 + ":00"
    written = client.post(
        "/api/database/advance/rawsql",
        json={"query": f"insert into {table} (ssn) values ('{forged}')"},
        headers=admin,
    )
    assert written.status_code == 200, written.text
    try:
        answer = rotated.post(f"{ENCRYPTION}/rotate", headers=admin_headers(rotated))
        assert answer.status_code == 409, answer.text
        assert f"public.{table}.ssn cannot be decrypted" in answer.json()["message"]
        stored = raw_rows(client, admin, f"select ssn from {table}")
        assert all(row["ssn"].startswith("v1:") for row in stored)  # nothing of the column was rewritten
        # Reading answers the forged value as it is stored, and the real one decrypted.
        read = client.get(f"{RECORDS}/{table}?select=ssn", headers=admin).json()
        assert sorted(r["ssn"] for r in read) == sorted([forged, "real"])
    finally:
        assert client.delete(f"/api/database/tables/{table}", headers=admin).status_code == 200


def test_the_summary_with_nothing_to_rotate() -> None:
    assert rotation_summary([]) == {"success": True, "message": NOTHING_TO_ROTATE, "totalReEncrypted": 0}
