"""Bulk upsert from CSV/JSON files, export as SQL/JSON, and SQL import (guarded, all or nothing)."""

from __future__ import annotations

import orjson
import psycopg
import pytest
from starlette.testclient import TestClient

ADVANCE = "/api/database/advance"


@pytest.fixture(scope="module", autouse=True)
def inventory(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items (sku text PRIMARY KEY, name text NOT NULL, qty int DEFAULT 0, tags jsonb);"
            "CREATE POLICY items_read ON items FOR SELECT TO anon USING (true);"
            "INSERT INTO items VALUES ('a-1', 'Anvil', 1, '{\"heavy\": true}')"
        )


def records(client: TestClient, admin: dict[str, str]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = client.get("/api/database/records/items?order=sku", headers=admin).json()
    return rows


def test_bulk_upsert_csv_and_json(client: TestClient, admin: dict[str, str]) -> None:
    csv_file = b"sku,name,qty\na-1,Anvil v2,5\nb-2,Bucket,\n"
    response = client.post(
        f"{ADVANCE}/bulk-upsert",
        headers=admin,
        files={"file": ("items.csv", csv_file, "text/csv")},
        data={"table": "items", "upsertKey": "sku"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["rowsAffected"] == 2
    rows = records(client, admin)
    assert [(r["sku"], r["name"], r["qty"]) for r in rows] == [("a-1", "Anvil v2", 5), ("b-2", "Bucket", 0)]
    json_file = orjson.dumps([{"sku": "c-3", "name": "Crate", "tags": ["wood"]}])
    response = client.post(
        f"{ADVANCE}/bulk-upsert",
        headers=admin,
        files={"file": ("items.json", json_file, "application/json")},
        data={"table": "items"},
    )
    assert response.status_code == 200, response.text
    assert records(client, admin)[-1]["tags"] == ["wood"]


@pytest.mark.parametrize(
    ("files", "data", "status"),
    [
        ({"file": ("x.txt", b"hi", "text/plain")}, {"table": "items"}, 400),
        ({"file": ("x.json", b"{oops", "application/json")}, {"table": "items"}, 400),
        ({"file": ("x.csv", b"nope\n1\n", "text/csv")}, {"table": "items"}, 400),
        ({"file": ("x.csv", b"sku,name\nz,Z\n", "text/csv")}, {"table": "missing"}, 404),
        ({"file": ("x.csv", b"sku,name\nz,Z\n", "text/csv")}, {}, 400),
        ({"file": ("x.csv", b"sku,name\na-1,dup\n", "text/csv")}, {"table": "items"}, 409),
    ],
)
def test_bulk_upsert_errors(
    client: TestClient,
    admin: dict[str, str],
    files: dict[str, tuple[str, bytes, str]],
    data: dict[str, str],
    status: int,
) -> None:
    response = client.post(f"{ADVANCE}/bulk-upsert", headers=admin, files=files, data=data)
    assert response.status_code == status, response.text


def test_export_json_and_sql(client: TestClient, admin: dict[str, str]) -> None:
    as_json = client.post(f"{ADVANCE}/export", headers=admin, json={"format": "json", "tables": ["items"]})
    assert as_json.status_code == 200, as_json.text
    table = as_json.json()["data"]["tables"]["items"]
    assert table["recordCount"] == 3
    assert {c["name"] for c in table["schema"]} == {"sku", "name", "qty", "tags"}
    limited = client.post(f"{ADVANCE}/export", headers=admin, json={"format": "json", "rowLimit": 1}).json()
    assert limited["truncatedTables"] == ["items"]
    as_sql = client.post(f"{ADVANCE}/export", headers=admin, json={"format": "sql"}).json()["data"]
    assert 'CREATE TABLE IF NOT EXISTS "items" (sku text NOT NULL' in as_sql
    assert "ENABLE ROW LEVEL SECURITY" in as_sql
    assert 'CREATE POLICY "items_read" ON "items" AS PERMISSIVE FOR SELECT TO anon USING (true);' in as_sql
    columns = '"items" ("sku", "name", "qty", "tags")'
    assert f"""INSERT INTO {columns} VALUES ('a-1', 'Anvil v2', 5, '{{"heavy":true}}');""" in as_sql
    assert client.post(f"{ADVANCE}/export", headers=admin, json={"format": "xml"}).status_code == 400
    assert client.post(f"{ADVANCE}/export", headers=admin, json={"tables": ["nope"]}).status_code == 404


def test_export_round_trips_through_import(client: TestClient, admin: dict[str, str]) -> None:
    dump = client.post(
        f"{ADVANCE}/export", headers=admin, json={"format": "sql", "tables": ["items"]}
    ).json()["data"]
    client.post(f"{ADVANCE}/rawsql", headers=admin, json={"query": "delete from items where sku = 'c-3'"})
    only_data = "\n".join(line for line in dump.splitlines() if line.startswith("INSERT"))
    response = client.post(
        f"{ADVANCE}/import",
        headers=admin,
        files={"file": ("dump.sql", only_data.encode(), "application/sql")},
        data={"truncate": "true"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["rowsImported"] == 3
    assert [r["sku"] for r in records(client, admin)] == ["a-1", "b-2", "c-3"]


def test_import_is_guarded_and_atomic(client: TestClient, admin: dict[str, str]) -> None:
    refused = client.post(
        f"{ADVANCE}/import",
        headers=admin,
        files={"file": ("x.sql", b"reset role; select 1", "application/sql")},
    )
    assert refused.status_code == 403
    broken = b"insert into items (sku, name) values ('d-4', 'Drum'); insert into nowhere values (1);"
    failed = client.post(
        f"{ADVANCE}/import", headers=admin, files={"file": ("x.sql", broken, "application/sql")}
    )
    assert failed.status_code == 404
    assert "d-4" not in [r["sku"] for r in records(client, admin)]
    assert client.post(f"{ADVANCE}/import", headers=admin, json={}).status_code == 400
