"""Encrypted columns through an in-place restore (`POST /api/database/backups/:id/restore`): the restored
tables have new oids, and the records API still reads their encrypted columns as plaintext and writes them
as ciphertext; a column encrypted after the backup is plaintext again, and one of a table made after the
backup (which the restore leaves as it is) stays encrypted.

A module of its own: a restore puts back the whole database, every other test's tables included."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.database.test_column_encryption import (
    CIPHERTEXT,
    ENCRYPTION,
    RAW,
    RECORDS,
    TABLES,
    column,
    create_table,
    insert,
    raw_rows,
)
from tests.support.app import admin_headers

BACKUPS = "/api/database/backups"


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def _new_table(client: TestClient, admin: dict[str, str], *, encrypted: bool) -> str:
    columns = [
        column("name", "string"),
        column("ssn", "string", encrypted=encrypted),
        column("age", "integer", encrypted=encrypted),
    ]
    return create_table(client, admin, f"enc_{secrets.token_hex(4)}", columns)


def _insert(client: TestClient, admin: dict[str, str], table: str, row: dict[str, Any]) -> None:
    assert {key: value for key, value in insert(client, admin, table, row).items() if key in row} == row


def _read(client: TestClient, admin: dict[str, str], table: str) -> list[dict[str, Any]]:
    read = client.get(f"{RECORDS}/{table}?select=name,ssn,age&order=name", headers=admin)
    assert read.status_code == 200, read.text
    rows: list[dict[str, Any]] = read.json()
    return rows


def _stored(client: TestClient, admin: dict[str, str], table: str) -> list[dict[str, Any]]:
    return raw_rows(client, admin, f"select name, ssn, age from {table} order by name")


def _listed(client: TestClient, admin: dict[str, str], table: str) -> set[str]:
    answer = client.get(ENCRYPTION, headers=admin)
    assert answer.status_code == 200, answer.text
    return {row["column_name"] for row in answer.json()["encryptedColumns"] if row["table_name"] == table}


def _backup(client: TestClient, admin: dict[str, str]) -> str:
    created = client.post(BACKUPS, headers=admin, json={})
    assert created.status_code == 201, created.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = next(
            r for r in client.get(BACKUPS, headers=admin).json()["backups"] if r["id"] == created.json()["id"]
        )
        if row["status"] != "running":
            assert row["status"] == "completed", row
            return str(row["id"])
        time.sleep(0.2)
    raise AssertionError("the backup did not finish")


def _restore(client: TestClient, admin: dict[str, str], backup_id: str) -> None:
    restored = client.post(f"{BACKUPS}/{backup_id}/restore", headers=admin)
    assert restored.status_code == 200, restored.text


def test_encrypted_columns_read_and_write_after_a_restore(client: TestClient, admin: dict[str, str]) -> None:
    table = _new_table(client, admin, encrypted=True)
    _insert(client, admin, table, {"name": "Ada", "ssn": "123-45-6789", "age": 36})
    backup_id = _backup(client, admin)
    _insert(client, admin, table, {"name": "Bo", "ssn": "000-00-0000", "age": 7})
    _restore(client, admin, backup_id)

    assert _read(client, admin, table) == [{"name": "Ada", "ssn": "123-45-6789", "age": 36}]
    _insert(client, admin, table, {"name": "Cy", "ssn": "555-55-5555", "age": 51})
    assert _read(client, admin, table)[1] == {"name": "Cy", "ssn": "555-55-5555", "age": 51}
    stored = _stored(client, admin, table)
    assert all(CIPHERTEXT.fullmatch(row["ssn"]) and CIPHERTEXT.fullmatch(row["age"]) for row in stored)
    assert _listed(client, admin, table) == {"ssn", "age"}
    # Twice over: the restored registry names the restored table, so a second restore finds it again.
    _restore(client, admin, backup_id)
    assert _read(client, admin, table) == [{"name": "Ada", "ssn": "123-45-6789", "age": 36}]


def test_a_renamed_table_and_column_stay_encrypted_through_a_restore(
    client: TestClient, admin: dict[str, str]
) -> None:
    table = _new_table(client, admin, encrypted=True)
    renamed = f"{table}_r"
    for statement in (
        f"alter table {table} rename column ssn to tax_id",
        f"alter table {table} rename to {renamed}",
    ):
        assert client.post(RAW, json={"query": statement}, headers=admin).status_code == 200
    _insert(client, admin, renamed, {"name": "Ada", "tax_id": "123"})
    backup_id = _backup(client, admin)
    _restore(client, admin, backup_id)
    read = client.get(f"{RECORDS}/{renamed}?select=name,tax_id", headers=admin)
    assert read.json() == [{"name": "Ada", "tax_id": "123"}]
    assert _listed(client, admin, renamed) == {"tax_id", "age"}


def test_a_column_encrypted_after_the_backup_is_plaintext_again(
    client: TestClient, admin: dict[str, str]
) -> None:
    table = _new_table(client, admin, encrypted=False)
    _insert(client, admin, table, {"name": "Ada", "ssn": "123-45-6789", "age": 36})
    backup_id = _backup(client, admin)
    encrypted = client.post(f"{TABLES}/{table}/encrypt-column", json={"column": "ssn"}, headers=admin)
    assert encrypted.status_code == 200, encrypted.text
    assert _listed(client, admin, table) == {"ssn"}
    _restore(client, admin, backup_id)

    assert _listed(client, admin, table) == set()
    assert _read(client, admin, table) == [{"name": "Ada", "ssn": "123-45-6789", "age": 36}]
    _insert(client, admin, table, {"name": "Bo", "ssn": "plain", "age": 7})
    assert _stored(client, admin, table)[1] == {"name": "Bo", "ssn": "plain", "age": 7}


def test_a_table_made_after_the_backup_keeps_its_encrypted_columns(
    client: TestClient, admin: dict[str, str]
) -> None:
    backup_id = _backup(client, admin)
    table = _new_table(client, admin, encrypted=True)
    # (A table of the tables API since the backup has a trigger on a function the restore makes anew, which
    # it cannot drop while the table uses it: a restore it would fail, whatever its columns.)
    dropped = client.post(
        RAW, json={"query": f"drop trigger {table}_update_timestamp on {table}"}, headers=admin
    )
    assert dropped.status_code == 200, dropped.text
    _insert(client, admin, table, {"name": "Ada", "ssn": "123-45-6789", "age": 36})
    _restore(client, admin, backup_id)

    assert _read(client, admin, table) == [{"name": "Ada", "ssn": "123-45-6789", "age": 36}]
    assert _listed(client, admin, table) == {"ssn", "age"}
    _insert(client, admin, table, {"name": "Bo", "ssn": "1", "age": 2})
