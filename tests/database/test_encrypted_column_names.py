"""The registry of encrypted columns keeps each column's names as well as its table's oid (migration 0320):
renames by raw SQL are followed in their transaction, and `system.repoint_encrypted_columns()` (what a
restore and every start call) finds a column again by its names, or drops the entry when the column lost
its ciphertext CHECK or is gone. The restores themselves are tested in tests/backups and tests/cli."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.config import Settings
from tests.database.conftest import NewName
from tests.database.test_column_encryption import (
    RAW,
    RECORDS,
    column,
    create_table,
    insert,
    raw_rows,
)


def _entries(settings: Settings, table: str) -> list[tuple[Any, ...]]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "select table_schema::text, table_name::text, column_name::text, "
            "table_oid = to_regclass(format('%%I.%%I', table_schema, table_name)) "
            "from system.encrypted_columns where table_name like %s order by column_name",
            (table + "%",),
        ).fetchall()


def _repoint(settings: Settings, statement: str = "") -> bool:
    """Run `statement` (as the owner), then the re-pointing, in one transaction; whether it changed any."""
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        if statement:
            conn.execute(statement)
        row = conn.execute("select system.repoint_encrypted_columns()").fetchone()
    return bool(row and row[0])


def _raw(client: TestClient, admin: dict[str, str], query: str) -> None:
    answer = client.post(RAW, json={"query": query}, headers=admin)
    assert answer.status_code == 200, answer.text


def test_renames_by_raw_sql_are_followed(
    client: TestClient, admin: dict[str, str], settings: Settings, new_name: NewName
) -> None:
    table = create_table(client, admin, new_name("named"), [column("ssn", "string", encrypted=True)])
    assert _entries(settings, table) == [("public", table, "ssn", True)]
    schema = new_name("app")
    _raw(client, admin, f"alter table {table} rename column ssn to tax_id")
    _raw(client, admin, f"alter table {table} rename to {table}_r")
    _raw(client, admin, f"create schema {schema}")
    _raw(client, admin, f"alter table {table}_r set schema {schema}")
    assert _entries(settings, table) == [(schema, f"{table}_r", "tax_id", True)]
    _raw(client, admin, f"alter schema {schema} rename to {schema}_x")
    assert _entries(settings, table) == [(f"{schema}_x", f"{table}_r", "tax_id", True)]
    # Names and oids agree: nothing to re-point.
    assert _repoint(settings) is False


def _as_restored(table: str, change: str = "table_oid = 1") -> str:
    """The entries of `table` as a dump brings them back: pointing where the backup's tables were."""
    return (
        "alter table system.encrypted_columns disable trigger name_encrypted_column; "
        f"update system.encrypted_columns set {change} where table_name = '{table}'; "
        "alter table system.encrypted_columns enable always trigger name_encrypted_column"
    )


def test_an_entry_is_found_again_by_its_names(
    client: TestClient, admin: dict[str, str], settings: Settings, new_name: NewName
) -> None:
    table = create_table(client, admin, new_name("again"), [column("ssn", "string", encrypted=True)])
    insert(client, admin, table, {"ssn": "123"})
    assert _repoint(settings, _as_restored(table)) is True
    assert _entries(settings, table) == [("public", table, "ssn", True)]
    read = client.get(f"{RECORDS}/{table}?select=ssn", headers=admin)
    assert read.status_code == 200 and read.json() == [{"ssn": "123"}]
    assert client.post(f"{RECORDS}/{table}", json={"ssn": "456"}, headers=admin).status_code == 201


def test_an_entry_without_its_column_or_check_is_dropped(
    client: TestClient, admin: dict[str, str], settings: Settings, new_name: NewName
) -> None:
    gone = create_table(client, admin, new_name("gone"), [column("ssn", "string", encrypted=True)])
    unchecked = create_table(client, admin, new_name("unchecked"), [column("ssn", "string", encrypted=True)])
    _raw(client, admin, f"alter table {unchecked} drop constraint enc_fmt_ssn")
    _raw(client, admin, f"insert into {unchecked} (ssn) values ('plain')")
    assert _repoint(settings, _as_restored(gone, f"table_oid = 1, table_name = '{gone}_x'")) is True
    assert _entries(settings, gone) == []
    # Where it points already, an entry stays, CHECK or not: only a restore's entries are checked.
    assert _entries(settings, unchecked) == [("public", unchecked, "ssn", True)]
    assert _repoint(settings, _as_restored(unchecked)) is True
    assert _entries(settings, unchecked) == []
    read = client.get(f"{RECORDS}/{unchecked}?select=ssn", headers=admin)
    assert read.json() == [{"ssn": "plain"}]
    assert raw_rows(client, admin, f"select ssn from {unchecked}") == [{"ssn": "plain"}]


def test_registering_a_column_that_is_not_there_is_refused(settings: Settings) -> None:
    assert settings.database_url is not None
    refused = pytest.raises(psycopg.errors.UndefinedColumn, match="an encrypted column must exist")
    with psycopg.connect(settings.database_url) as conn, refused:
        conn.execute(
            "insert into system.encrypted_columns (table_oid, column_num, original_type, key_version) "
            "values ('system.migrations'::regclass, 99, 'text', 1)"
        )
