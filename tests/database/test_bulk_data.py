"""Bulk upsert from CSV/JSON files, export as SQL/JSON, and SQL import (guarded, all or nothing).

Each test gets a table of its own (`items`, one row to start with), so the tests hold in any order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from starlette.testclient import TestClient

from tests.database.conftest import NewName

ADVANCE = "/api/database/advance"


@pytest.fixture
def items(database_url: str, new_name: NewName) -> str:
    """A fresh table with one row and an anon read policy, made outside the API (as psql would); its name."""
    table = new_name("items")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {t} (sku text PRIMARY KEY, name text NOT NULL, qty int DEFAULT 0, tags jsonb);"
                "CREATE POLICY {policy} ON {t} FOR SELECT TO anon USING (true);"
                "INSERT INTO {t} VALUES ('a-1', 'Anvil', 1, '{{\"heavy\": true}}')"
            ).format(t=sql.Identifier(table), policy=sql.Identifier(f"{table}_read"))
        )
    return table


def add_rows(database_url: str, table: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (sku, name, tags) VALUES ('b-2', 'Bucket', NULL), ('c-3', 'Crate', %s)"
            ).format(sql.Identifier(table)),
            ('["wood"]',),
        )


def records(client: TestClient, admin: dict[str, str], table: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/database/records/{table}?order=sku", headers=admin)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def test_bulk_upsert_csv_and_json(client: TestClient, admin: dict[str, str], items: str) -> None:
    csv_file = b"sku,name,qty\na-1,Anvil v2,5\nb-2,Bucket,\n"
    response = client.post(
        f"{ADVANCE}/bulk-upsert",
        headers=admin,
        files={"file": ("items.csv", csv_file, "text/csv")},
        data={"table": items, "upsertKey": "sku"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["success"], body["table"], body["rowsAffected"], body["totalRecords"]) == (True, items, 2, 2)
    rows = records(client, admin, items)
    # a-1 is updated in place (its tags kept), b-2's empty qty takes the column default.
    assert [(r["sku"], r["name"], r["qty"], r["tags"]) for r in rows] == [
        ("a-1", "Anvil v2", 5, {"heavy": True}),
        ("b-2", "Bucket", 0, None),
    ]
    json_file = orjson.dumps([{"sku": "c-3", "name": "Crate", "tags": ["wood"]}])
    response = client.post(
        f"{ADVANCE}/bulk-upsert",
        headers=admin,
        files={"file": ("items.json", json_file, "application/json")},
        data={"table": items},
    )
    assert response.status_code == 200, response.text
    assert response.json()["rowsAffected"] == 1
    assert [(r["sku"], r["qty"], r["tags"]) for r in records(client, admin, items)][-1] == (
        "c-3",
        0,
        ["wood"],
    )


def test_bulk_upsert_csv_with_a_large_cell_and_lone_carriage_returns(
    client: TestClient, admin: dict[str, str], items: str
) -> None:
    """A cell past Python's default 128 KiB, and lines ended by a lone \r (old Mac files), are read as the
    file says (each was a 500)."""
    long_name = "n" * 200_000
    csv_file = f"sku,name\rb-2,{long_name}\rc-3,Crate\r".encode()
    response = client.post(
        f"{ADVANCE}/bulk-upsert",
        headers=admin,
        files={"file": ("items.csv", csv_file, "text/csv")},
        data={"table": items},
    )
    assert response.status_code == 200, response.text
    assert response.json()["rowsAffected"] == 2
    assert [(r["sku"], r["name"]) for r in records(client, admin, items)] == [
        ("a-1", "Anvil"),
        ("b-2", long_name),
        ("c-3", "Crate"),
    ]


@pytest.mark.parametrize(
    ("files", "data", "status", "code"),
    [
        ({"file": ("x.txt", b"hi", "text/plain")}, {"table": "{items}"}, 400, "INVALID_INPUT"),
        ({"file": ("x.json", b"{oops", "application/json")}, {"table": "{items}"}, 400, "INVALID_INPUT"),
        ({"file": ("x.json", b"[1, 2]", "application/json")}, {"table": "{items}"}, 400, "INVALID_INPUT"),
        (
            {"file": ("x.csv", b"nope\n1\n", "text/csv")},
            {"table": "{items}"},
            400,
            "DATABASE_VALIDATION_ERROR",
        ),
        (
            {"file": ("x.csv", b"sku,name\nz,Z\n", "text/csv")},
            {"table": "{missing}"},
            404,
            "DATABASE_NOT_FOUND",
        ),
        ({"file": ("x.csv", b"sku,name\nz,Z\n", "text/csv")}, {}, 400, "MISSING_FIELD"),
        (
            {"file": ("x.csv", b"sku,name\nz,Z\n", "text/csv")},
            {"table": "{items}", "upsertKey": "nope"},
            400,
            "DATABASE_VALIDATION_ERROR",
        ),
        (
            {"file": ("x.csv", b"sku,name\na-1,dup\n", "text/csv")},
            {"table": "{items}"},
            409,
            "DATABASE_DUPLICATE",
        ),
        (
            {"file": ("x.csv", b"sku\nz\n", "text/csv")},
            {"table": "{items}"},
            400,
            "DATABASE_CONSTRAINT_VIOLATION",
        ),
    ],
)
def test_bulk_upsert_errors_change_nothing(
    client: TestClient,
    admin: dict[str, str],
    items: str,
    new_name: NewName,
    files: dict[str, tuple[str, bytes, str]],
    data: dict[str, str],
    status: int,
    code: str,
) -> None:
    before = records(client, admin, items)
    form = {key: value.format(items=items, missing=new_name("missing")) for key, value in data.items()}
    response = client.post(f"{ADVANCE}/bulk-upsert", headers=admin, files=files, data=form)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert records(client, admin, items) == before


def test_a_cell_its_column_cannot_read_is_named_as_the_files_mistake(
    client: TestClient, admin: dict[str, str], items: str
) -> None:
    before = records(client, admin, items)
    response = client.post(
        f"{ADVANCE}/bulk-upsert",
        headers=admin,
        files={"file": ("rows.csv", b"sku,name,qty\nz-9,Zip,many\n", "text/csv")},
        data={"table": items},
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "DATABASE_VALIDATION_ERROR" and '"many"' in body["message"], body
    # No SQL of the caller's is involved: the next step is about the file.
    assert "SQL" not in body["nextActions"] and "file" in body["nextActions"], body
    assert records(client, admin, items) == before


@pytest.mark.parametrize(
    ("name", "content"),
    [("rows.json", b"[]"), ("rows.csv", b"sku,name\n"), ("rows.csv", b""), ("rows.csv", b"\n\n")],
)
def test_a_file_without_rows_is_refused_as_insforge_refuses_it(
    client: TestClient, admin: dict[str, str], items: str, name: str, content: bytes
) -> None:
    """InsForge: 400 INVALID_INPUT "No records found in file" (its parser skips empty lines)."""
    response = client.post(
        f"{ADVANCE}/bulk-upsert",
        headers=admin,
        files={"file": (name, content, "text/plain")},
        data={"table": items},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "INVALID_INPUT"
    assert response.json()["message"] == "No records found in file"


def test_export_json(
    client: TestClient, admin: dict[str, str], items: str, new_name: NewName, database_url: str
) -> None:
    add_rows(database_url, items)
    as_json = client.post(f"{ADVANCE}/export", headers=admin, json={"format": "json", "tables": [items]})
    assert as_json.status_code == 200, as_json.text
    body = as_json.json()
    assert body["format"] == "json"
    assert body["truncatedTables"] == []
    assert list(body["data"]["tables"]) == [items]
    table = body["data"]["tables"][items]
    assert table["recordCount"] == 3
    assert [c["name"] for c in table["schema"]] == ["sku", "name", "qty", "tags"]
    assert sorted((r["sku"], r["tags"]) for r in table["rows"]) == [
        ("a-1", {"heavy": True}),
        ("b-2", None),
        ("c-3", ["wood"]),
    ]
    # rowLimit caps every table's rows and says which ones it cut.
    single = new_name("single")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (n int); INSERT INTO {} VALUES (1)").format(
                *[sql.Identifier(single)] * 2
            )
        )
    limited = client.post(
        f"{ADVANCE}/export", headers=admin, json={"format": "json", "tables": [items, single], "rowLimit": 1}
    ).json()
    assert limited["truncatedTables"] == [items]
    assert [len(limited["data"]["tables"][t]["rows"]) for t in (items, single)] == [1, 1]
    assert limited["data"]["tables"][items]["recordCount"] == 3
    # Without `tables`, every table in public is exported.
    everything = client.post(f"{ADVANCE}/export", headers=admin, json={"format": "json"}).json()
    assert {items, single} <= set(everything["data"]["tables"])
    schema_only = client.post(
        f"{ADVANCE}/export", headers=admin, json={"format": "json", "tables": [items], "includeData": False}
    ).json()
    assert schema_only["data"]["tables"][items]["rows"] == []


def test_export_sql(client: TestClient, admin: dict[str, str], items: str) -> None:
    response = client.post(f"{ADVANCE}/export", headers=admin, json={"format": "sql", "tables": [items]})
    assert response.status_code == 200, response.text
    assert response.json()["format"] == "sql"
    as_sql = response.json()["data"]
    assert f'CREATE TABLE IF NOT EXISTS "{items}" (sku text NOT NULL' in as_sql
    assert f'ALTER TABLE "{items}" ENABLE ROW LEVEL SECURITY;' in as_sql
    assert (
        f'CREATE POLICY "{items}_read" ON "{items}" AS PERMISSIVE FOR SELECT TO anon USING (true);' in as_sql
    )
    assert "project_admin_policy" not in as_sql  # Kilnbase adds it on import by itself
    columns = f'"{items}" ("sku", "name", "qty", "tags")'
    assert f"""INSERT INTO {columns} VALUES ('a-1', 'Anvil', 1, '{{"heavy":true}}');""" in as_sql


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (lambda items, missing: {"format": "xml", "tables": [items]}, 400, "INVALID_INPUT"),
        (lambda items, missing: {"tables": [items], "rowLimit": 0}, 400, "INVALID_INPUT"),
        (lambda items, missing: {"tables": [items], "rowLimit": 10_001}, 400, "INVALID_INPUT"),
        (lambda items, missing: {"tables": items}, 400, "INVALID_INPUT"),
        (lambda items, missing: {"tables": [items, missing]}, 404, "DATABASE_NOT_FOUND"),
    ],
)
def test_export_errors(
    client: TestClient,
    admin: dict[str, str],
    items: str,
    new_name: NewName,
    body: Callable[[str, str], dict[str, Any]],
    status: int,
    code: str,
) -> None:
    response = client.post(f"{ADVANCE}/export", headers=admin, json=body(items, new_name("nope")))
    assert response.status_code == status, response.text
    assert response.json()["error"] == code


def test_export_round_trips_through_import(
    client: TestClient, admin: dict[str, str], items: str, database_url: str
) -> None:
    add_rows(database_url, items)
    exported = records(client, admin, items)
    dump = client.post(f"{ADVANCE}/export", headers=admin, json={"format": "sql", "tables": [items]}).json()[
        "data"
    ]
    deleted = client.post(
        f"{ADVANCE}/rawsql", headers=admin, json={"query": f"delete from {items} where sku = 'c-3'"}
    )
    assert deleted.status_code == 200, deleted.text
    assert [r["sku"] for r in records(client, admin, items)] == ["a-1", "b-2"]
    only_data = "\n".join(line for line in dump.splitlines() if line.startswith("INSERT"))
    response = client.post(
        f"{ADVANCE}/import",
        headers=admin,
        files={"file": ("dump.sql", only_data.encode(), "application/sql")},
        data={"truncate": "true"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["success"], body["filename"], body["tables"], body["rowsImported"]) == (
        True,
        "dump.sql",
        [items],
        3,
    )
    assert body["fileSize"] == len(only_data.encode())
    assert records(client, admin, items) == exported


def test_import_is_guarded_and_atomic(
    client: TestClient, admin: dict[str, str], items: str, new_name: NewName
) -> None:
    before = records(client, admin, items)
    refused = client.post(
        f"{ADVANCE}/import",
        headers=admin,
        files={"file": ("x.sql", b"reset role; select 1", "application/sql")},
    )
    assert refused.status_code == 403
    assert refused.json()["error"] == "DATABASE_FORBIDDEN"
    broken = (
        f"insert into {items} (sku, name) values ('d-4', 'Drum'); "
        f"insert into {new_name('nowhere')} values (1);"
    )
    failed = client.post(
        f"{ADVANCE}/import", headers=admin, files={"file": ("x.sql", broken.encode(), "application/sql")}
    )
    assert failed.status_code == 404
    assert failed.json()["error"] == "DATABASE_NOT_FOUND"
    assert records(client, admin, items) == before  # d-4 went with the failing statement
    not_sql = client.post(
        f"{ADVANCE}/import", headers=admin, files={"file": ("x.csv", b"sku\nz\n", "text/csv")}
    )
    assert not_sql.status_code == 400
    no_file = client.post(f"{ADVANCE}/import", headers=admin, json={})
    assert no_file.status_code == 400
    assert no_file.json()["error"] == "INVALID_INPUT"


def test_bulk_data_is_admin_only(
    client: TestClient, anon: dict[str, str], user: dict[str, str], items: str
) -> None:
    for caller, status in ((anon, 401), (user, 403)):
        upsert = client.post(
            f"{ADVANCE}/bulk-upsert",
            headers=caller,
            files={"file": ("x.csv", b"sku,name\nz,Z\n", "text/csv")},
            data={"table": items},
        )
        assert upsert.status_code == status
        exported = client.post(f"{ADVANCE}/export", headers=caller, json={"tables": [items]})
        assert exported.status_code == status
