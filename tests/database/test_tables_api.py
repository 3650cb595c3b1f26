"""Tables API: create with auto fields and RLS, schema, alter, drop; catalog listings; admin only."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

TABLES = "/api/database/tables"


def test_create_table_adds_auto_fields_and_is_usable_at_once(
    client: TestClient, admin: dict[str, str]
) -> None:
    body = {
        "tableName": "authors",
        "columns": [
            {"columnName": "name", "type": "string", "isNullable": False, "isUnique": True},
            {"columnName": "karma", "type": "integer", "isNullable": True, "defaultValue": "0"},
            {"columnName": "id", "type": "uuid", "isNullable": False},
        ],
    }
    created = client.post(TABLES, json=body, headers=admin)
    assert created.status_code == 201, created.text
    payload = created.json()
    assert payload["autoFields"] == ["id", "created_at", "updated_at"]
    assert [c["sqlType"] for c in payload["columns"]] == ["TEXT", "INTEGER"]
    inserted = client.post(
        "/api/database/records/authors?select=id,name,karma,created_at",
        json={"name": "Ada"},
        headers={**admin, "Prefer": "return=representation"},
    )
    assert inserted.status_code == 201, inserted.text
    row = inserted.json()[0]
    assert row["karma"] == 0
    assert len(row["id"]) == 36
    assert row["created_at"]


def test_updated_at_trigger_and_rls_default(
    client: TestClient, admin: dict[str, str], anon: dict[str, str]
) -> None:
    records = "/api/database/records/authors"
    before = client.get(f"{records}?select=updated_at&name=eq.Ada", headers=admin).json()[0]["updated_at"]
    client.patch(f"{records}?name=eq.Ada", json={"karma": 5}, headers=admin)
    after = client.get(f"{records}?select=updated_at&name=eq.Ada", headers=admin).json()[0]["updated_at"]
    assert after > before
    assert client.get(records, headers=anon).json() == []


def test_foreign_keys_and_schema(client: TestClient, admin: dict[str, str]) -> None:
    body = {
        "tableName": "books",
        "columns": [
            {"columnName": "title", "type": "string", "isNullable": False},
            {
                "columnName": "author_id",
                "type": "uuid",
                "isNullable": True,
                "foreignKey": {"referenceTable": "authors", "referenceColumn": "id", "onDelete": "CASCADE"},
            },
            {"columnName": "meta", "type": "json"},
            {"columnName": "price", "type": "numeric(10,2)"},
        ],
        "rlsEnabled": False,
    }
    assert client.post(TABLES, json=body, headers=admin).status_code == 201
    schema = client.get(f"{TABLES}/books/schema", headers=admin).json()
    columns = {c["columnName"]: c for c in schema["columns"]}
    assert columns["id"]["isPrimaryKey"] is True
    assert columns["title"]["type"] == "string"
    assert columns["meta"]["type"] == "json"
    assert columns["price"]["type"] == "numeric(10,2)"
    assert columns["author_id"]["foreignKey"]["referenceTable"] == "authors"
    assert columns["author_id"]["foreignKey"]["onDelete"] == "CASCADE"
    assert schema["recordCount"] == 0
    embedded = client.get("/api/database/records/books?select=title,authors(name)", headers=admin)
    assert embedded.status_code == 200, embedded.text


def test_alter_table_operations(client: TestClient, admin: dict[str, str]) -> None:
    body = {
        "addColumns": [{"columnName": "pages", "type": "integer", "isNullable": True}],
        "updateColumns": [{"columnName": "meta", "newColumnName": "details", "defaultValue": "{}"}],
        "dropColumns": ["price"],
        "dropForeignKeys": ["author_id"],
    }
    response = client.patch(f"{TABLES}/books/schema", json=body, headers=admin)
    assert response.status_code == 200, response.text
    assert len(response.json()["operations"]) == 4
    columns = {
        c["columnName"]: c for c in client.get(f"{TABLES}/books/schema", headers=admin).json()["columns"]
    }
    assert "pages" in columns
    assert "price" not in columns
    assert columns["details"]["defaultValue"] == "{}"
    assert "foreignKey" not in columns["author_id"]
    renamed = client.patch(
        f"{TABLES}/books/schema", json={"renameTable": {"newTableName": "volumes"}}, headers=admin
    )
    assert renamed.status_code == 200
    assert "volumes" in client.get(TABLES, headers=admin).json()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"tableName": "bad name", "columns": [{"columnName": "x", "type": "string"}]},
            400,
            "DATABASE_INVALID_PARAMETER",
        ),
        ({"tableName": "t1", "columns": []}, 400, "MISSING_FIELD"),
        (
            {"tableName": "t1", "columns": [{"columnName": "x", "type": "text; drop table authors"}]},
            400,
            "DATABASE_INVALID_PARAMETER",
        ),
        (
            {"tableName": "t1", "columns": [{"columnName": "id", "type": "integer"}]},
            400,
            "DATABASE_VALIDATION_ERROR",
        ),
        (
            {"tableName": "authors", "columns": [{"columnName": "x", "type": "string"}]},
            400,
            "DATABASE_DUPLICATE",
        ),
        (
            {"tableName": "t1", "columns": [{"columnName": "x", "type": "nosuchtype"}]},
            400,
            "DATABASE_VALIDATION_ERROR",
        ),
    ],
)
def test_create_table_errors(
    client: TestClient, admin: dict[str, str], body: dict[str, object], status: int, code: str
) -> None:
    response = client.post(TABLES, json=body, headers=admin)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code


def test_defaults_are_literals_not_sql(client: TestClient, admin: dict[str, str]) -> None:
    body = {
        "tableName": "quotes",
        "columns": [
            {"columnName": "text", "type": "string", "defaultValue": "it's'); drop table authors; --"}
        ],
    }
    assert client.post(TABLES, json=body, headers=admin).status_code == 201
    schema = client.get(f"{TABLES}/quotes/schema", headers=admin).json()
    assert schema["columns"][1]["defaultValue"] == "it's'); drop table authors; --"
    assert "authors" in client.get(TABLES, headers=admin).json()


def test_missing_table_and_system_columns(client: TestClient, admin: dict[str, str]) -> None:
    assert client.get(f"{TABLES}/nope/schema", headers=admin).status_code == 404
    response = client.patch(f"{TABLES}/quotes/schema", json={"dropColumns": ["id"]}, headers=admin)
    assert response.status_code == 400
    assert response.json()["error"] == "DATABASE_FORBIDDEN"


def test_delete_table(client: TestClient, admin: dict[str, str]) -> None:
    assert client.delete(f"{TABLES}/quotes", headers=admin).status_code == 200
    assert "quotes" not in client.get(TABLES, headers=admin).json()
    gone = client.get("/api/database/records/quotes", headers=admin)
    assert gone.status_code == 404


def test_catalog_listings(client: TestClient, admin: dict[str, str]) -> None:
    assert "public" in client.get("/api/database/schemas", headers=admin).json()["schemas"]
    policies = client.get("/api/database/policies", headers=admin).json()["policies"]
    assert {"tableName": "authors", "policyName": "project_admin_policy"}.items() <= policies[0].items()
    triggers = client.get("/api/database/triggers", headers=admin).json()["triggers"]
    assert any(t["triggerName"] == "authors_update_timestamp" for t in triggers)
    indexes = client.get("/api/database/indexes", headers=admin).json()["indexes"]
    assert any(i["tableName"] == "authors" and i["isPrimary"] for i in indexes)
    assert client.get("/api/database/functions", headers=admin).json() == {"functions": []}
    assert client.get("/api/database/indexes?schema=bad;name", headers=admin).status_code == 400


@pytest.mark.parametrize(
    "path", ["/api/database/tables", "/api/database/policies", "/api/database/migrations"]
)
def test_admin_only(client: TestClient, anon: dict[str, str], user: dict[str, str], path: str) -> None:
    assert client.get(path).status_code == 401
    assert client.get(path, headers=anon).status_code == 403
    assert client.get(path, headers=user).status_code == 403
