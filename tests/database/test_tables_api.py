"""Tables API: create with auto fields and RLS, schema, alter, drop; catalog listings; admin only.

Each test creates the tables it reads (`authors` is a fresh table per test, under a name of its own), so the
tests hold in any order. Shapes follow InsForge's `/api/database/tables` contract."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from tests.database.conftest import NewName

TABLES = "/api/database/tables"
RECORDS = "/api/database/records"
RAW = "/api/database/advance/rawsql"
REPRESENTATION = {"Prefer": "return=representation"}


def create(
    client: TestClient, admin: dict[str, str], table: str, columns: list[dict[str, Any]], **options: Any
) -> httpx2.Response:
    return client.post(TABLES, json={"tableName": table, "columns": columns, **options}, headers=admin)


def listed_tables(client: TestClient, admin: dict[str, str]) -> list[str]:
    response = client.get(TABLES, headers=admin)
    assert response.status_code == 200, response.text
    names: list[str] = response.json()
    return names


def columns_of(client: TestClient, admin: dict[str, str], table: str) -> dict[str, dict[str, Any]]:
    response = client.get(f"{TABLES}/{table}/schema", headers=admin)
    assert response.status_code == 200, response.text
    return {c["columnName"]: c for c in response.json()["columns"]}


@pytest.fixture
def authors(client: TestClient, admin: dict[str, str], new_name: NewName) -> str:
    """A fresh table of authors (RLS on, no rows), made through the API; its name."""
    table = new_name("authors")
    columns = [
        {"columnName": "name", "type": "string", "isNullable": False, "isUnique": True},
        {"columnName": "karma", "type": "integer", "isNullable": True, "defaultValue": "0"},
    ]
    created = create(client, admin, table, columns)
    assert created.status_code == 201, created.text
    return table


def add_author(client: TestClient, admin: dict[str, str], table: str, name: str) -> dict[str, Any]:
    inserted = client.post(f"{RECORDS}/{table}", json={"name": name}, headers={**admin, **REPRESENTATION})
    assert inserted.status_code == 201, inserted.text
    row: dict[str, Any] = inserted.json()[0]
    return row


def test_create_table_adds_auto_fields_and_is_usable_at_once(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    table = new_name("authors")
    columns = [
        {"columnName": "name", "type": "string", "isNullable": False, "isUnique": True},
        {"columnName": "karma", "type": "integer", "isNullable": True, "defaultValue": "0"},
        {"columnName": "id", "type": "uuid", "isNullable": False},  # reserved: added anyway, not twice
    ]
    created = create(client, admin, table, columns)
    assert created.status_code == 201, created.text
    payload = created.json()
    assert payload["tableName"] == table
    assert payload["autoFields"] == ["id", "created_at", "updated_at"]
    assert [(c["columnName"], c["sqlType"]) for c in payload["columns"]] == [
        ("name", "TEXT"),
        ("karma", "INTEGER"),
    ]
    assert f"/api/database/records/{table}" in payload["nextActions"]
    assert table in listed_tables(client, admin)
    assert list(columns_of(client, admin, table)) == ["id", "name", "karma", "created_at", "updated_at"]
    inserted = client.post(
        f"{RECORDS}/{table}?select=id,name,karma,created_at",
        json={"name": "Ada"},
        headers={**admin, **REPRESENTATION},
    )
    assert inserted.status_code == 201, inserted.text
    row = inserted.json()[0]
    assert row["name"] == "Ada"
    assert row["karma"] == 0
    assert len(row["id"]) == 36
    assert datetime.fromisoformat(row["created_at"]).tzinfo is not None  # a timestamptz
    duplicate = client.post(f"{RECORDS}/{table}", json={"name": "Ada"}, headers=admin)
    assert duplicate.status_code == 409, duplicate.text  # isUnique holds


def test_updated_at_trigger_and_rls_default(
    client: TestClient, admin: dict[str, str], anon: dict[str, str], user: dict[str, str], authors: str
) -> None:
    records = f"{RECORDS}/{authors}"
    before = datetime.fromisoformat(add_author(client, admin, authors, "Ada")["updated_at"])
    patched = client.patch(f"{records}?name=eq.Ada", json={"karma": 5}, headers={**admin, **REPRESENTATION})
    assert patched.status_code == 200, patched.text
    assert patched.json()[0]["karma"] == 5
    after = client.get(f"{records}?select=updated_at&name=eq.Ada", headers=admin).json()[0]["updated_at"]
    assert datetime.fromisoformat(after) > before
    # The row exists, and RLS (on by default) hides it from everyone but the admin until a policy opens it.
    assert client.get(records, headers=anon).json() == []
    assert client.get(records, headers=user).json() == []
    assert [r["name"] for r in client.get(records, headers=admin).json()] == ["Ada"]


def test_rls_can_be_left_off(
    client: TestClient, admin: dict[str, str], anon: dict[str, str], new_name: NewName
) -> None:
    table = new_name("notices")
    created = create(client, admin, table, [{"columnName": "body", "type": "string"}], rlsEnabled=False)
    assert created.status_code == 201, created.text
    client.post(f"{RECORDS}/{table}", json={"body": "open to all"}, headers=admin)
    assert [r["body"] for r in client.get(f"{RECORDS}/{table}", headers=anon).json()] == ["open to all"]


def test_foreign_keys_and_schema(
    client: TestClient, admin: dict[str, str], authors: str, new_name: NewName
) -> None:
    books = new_name("books")
    columns: list[dict[str, Any]] = [
        {"columnName": "title", "type": "string", "isNullable": False},
        {
            "columnName": "author_id",
            "type": "uuid",
            "isNullable": True,
            "foreignKey": {"referenceTable": authors, "referenceColumn": "id", "onDelete": "CASCADE"},
        },
        {"columnName": "meta", "type": "json"},
        {"columnName": "price", "type": "numeric(10,2)"},
    ]
    assert create(client, admin, books, columns, rlsEnabled=False).status_code == 201
    schema = client.get(f"{TABLES}/{books}/schema", headers=admin).json()
    assert schema["tableName"] == books
    assert schema["recordCount"] == 0
    columns_by_name = {c["columnName"]: c for c in schema["columns"]}
    assert columns_by_name["id"]["isPrimaryKey"] is True
    assert columns_by_name["title"]["type"] == "string"
    assert columns_by_name["title"]["isNullable"] is False
    assert columns_by_name["meta"]["type"] == "json"
    assert columns_by_name["price"]["type"] == "numeric(10,2)"
    fk = columns_by_name["author_id"]["foreignKey"]
    assert (fk["referenceTable"], fk["referenceColumn"], fk["onDelete"]) == (authors, "id", "CASCADE")
    assert "foreignKey" not in columns_by_name["title"]
    ada = add_author(client, admin, authors, "Ada")
    client.post(f"{RECORDS}/{books}", json={"title": "Notes", "author_id": ada["id"]}, headers=admin)
    assert client.get(f"{TABLES}/{books}/schema", headers=admin).json()["recordCount"] == 1
    embedded = client.get(f"{RECORDS}/{books}?select=title,{authors}(name)", headers=admin)
    assert embedded.status_code == 200, embedded.text
    assert embedded.json() == [{"title": "Notes", authors: {"name": "Ada"}}]
    client.delete(f"{RECORDS}/{authors}?name=eq.Ada", headers=admin)
    assert client.get(f"{RECORDS}/{books}", headers=admin).json() == []  # ON DELETE CASCADE


def test_alter_table_operations(
    client: TestClient, admin: dict[str, str], authors: str, new_name: NewName
) -> None:
    books = new_name("books")
    columns: list[dict[str, Any]] = [
        {"columnName": "title", "type": "string"},
        {"columnName": "author_id", "type": "uuid", "foreignKey": {"referenceTable": authors}},
        {"columnName": "meta", "type": "json"},
        {"columnName": "price", "type": "numeric(10,2)"},
    ]
    assert create(client, admin, books, columns).status_code == 201
    body = {
        "addColumns": [{"columnName": "pages", "type": "integer", "isNullable": True}],
        "updateColumns": [{"columnName": "meta", "newColumnName": "details", "defaultValue": "{}"}],
        "dropColumns": ["price"],
        "dropForeignKeys": ["author_id"],
    }
    response = client.patch(f"{TABLES}/{books}/schema", json=body, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["tableName"] == books
    assert response.json()["operations"] == [
        f"Dropped foreign key constraint: fk_author_id_{authors}_id",
        "Dropped column: price",
        "Updated column: meta",
        "Added column: pages",
    ]
    columns_by_name = columns_of(client, admin, books)
    assert columns_by_name["pages"]["type"] == "integer"
    assert "price" not in columns_by_name
    assert "meta" not in columns_by_name
    assert columns_by_name["details"]["defaultValue"] == "{}"
    assert "foreignKey" not in columns_by_name["author_id"]
    volumes = new_name("volumes")
    renamed = client.patch(
        f"{TABLES}/{books}/schema", json={"renameTable": {"newTableName": volumes}}, headers=admin
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["operations"] == [f"Renamed table from {books} to {volumes}"]
    tables = listed_tables(client, admin)
    assert volumes in tables
    assert books not in tables
    assert client.get(f"{RECORDS}/{volumes}", headers=admin).status_code == 200


@pytest.mark.parametrize(
    ("table", "columns", "code"),
    [
        ("bad name", [{"columnName": "x", "type": "string"}], "DATABASE_INVALID_PARAMETER"),
        ("{table}", [], "MISSING_FIELD"),
        ("{table}", [{"columnName": "x", "type": "text; drop table t"}], "DATABASE_INVALID_PARAMETER"),
        ("{table}", [{"columnName": "id", "type": "integer"}], "DATABASE_VALIDATION_ERROR"),
        ("{table}", [{"columnName": "id", "type": "uuid"}], "DATABASE_VALIDATION_ERROR"),
        ("{table}", [{"columnName": "x", "type": "nosuchtype"}], "DATABASE_VALIDATION_ERROR"),
        ("{table}", [{"columnName": "bad column", "type": "string"}], "DATABASE_INVALID_PARAMETER"),
        # A name that is not text is refused by name (it was a 500: a list or object cannot be looked up).
        ("{table}", [{"columnName": ["id"], "type": "string"}], "DATABASE_INVALID_PARAMETER"),
        ("{table}", [{"columnName": {"name": "x"}, "type": "string"}], "DATABASE_INVALID_PARAMETER"),
    ],
)
def test_create_table_errors(
    client: TestClient,
    admin: dict[str, str],
    new_name: NewName,
    table: str,
    columns: list[dict[str, Any]],
    code: str,
) -> None:
    name = table.format(table=new_name("rejected"))
    response = create(client, admin, name, columns)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code
    assert response.json()["statusCode"] == 400
    assert name not in listed_tables(client, admin)


def test_create_existing_table_is_a_duplicate(
    client: TestClient, admin: dict[str, str], authors: str
) -> None:
    response = create(client, admin, authors, [{"columnName": "x", "type": "string"}])
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "DATABASE_DUPLICATE"
    assert "x" not in columns_of(client, admin, authors)


def test_defaults_are_literals_not_sql(
    client: TestClient, admin: dict[str, str], authors: str, new_name: NewName
) -> None:
    quotes = new_name("quotes")
    sneaky = f"it's'); drop table {authors}; --"
    created = create(
        client, admin, quotes, [{"columnName": "text", "type": "string", "defaultValue": sneaky}]
    )
    assert created.status_code == 201, created.text
    assert columns_of(client, admin, quotes)["text"]["defaultValue"] == sneaky
    row = client.post(f"{RECORDS}/{quotes}", json={}, headers={**admin, **REPRESENTATION}).json()[0]
    assert row["text"] == sneaky
    assert authors in listed_tables(client, admin)


def test_missing_table_and_system_columns(
    client: TestClient, admin: dict[str, str], authors: str, new_name: NewName
) -> None:
    missing = client.get(f"{TABLES}/{new_name('nope')}/schema", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["error"] == "DATABASE_NOT_FOUND"
    for body in (
        {"dropColumns": ["id"]},
        {"updateColumns": [{"columnName": "created_at", "newColumnName": "c"}]},
    ):
        response = client.patch(f"{TABLES}/{authors}/schema", json=body, headers=admin)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "DATABASE_FORBIDDEN"
    assert {"id", "created_at", "updated_at"} <= set(columns_of(client, admin, authors))


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            {"dropForeignKeys": [{"constraintName": "fk"}]},
            "INVALID_INPUT",
            "dropForeignKeys.0: Expected string, received object",
        ),
        (
            {"dropForeignKeys": [["fk"]]},
            "INVALID_INPUT",
            "dropForeignKeys.0: Expected string, received array",
        ),
        (
            {"addForeignKeys": [{"columnName": ["karma"], "foreignKey": {"referenceTable": "{table}"}}]},
            "DATABASE_INVALID_PARAMETER",
            "Invalid column name: ['karma']",
        ),
        (
            {
                "addForeignKeys": [
                    {
                        "referenceTable": "{table}",
                        "referenceColumns": [{"sourceColumn": {"name": "karma"}, "referenceColumn": "id"}],
                    }
                ]
            },
            "DATABASE_INVALID_PARAMETER",
            "Invalid source column name: {'name': 'karma'}",
        ),
    ],
)
def test_alter_refuses_names_that_are_not_text(
    client: TestClient, admin: dict[str, str], authors: str, change: dict[str, Any], code: str, message: str
) -> None:
    """A constraint or column named by a list or an object is a 400 that says so (it was a 500), and the
    table is left as it was."""
    before = client.get(f"{TABLES}/{authors}/schema", headers=admin).json()
    body = json.loads(json.dumps(change).replace("{table}", authors))
    response = client.patch(f"{TABLES}/{authors}/schema", json=body, headers=admin)
    refusal = (response.status_code, response.json()["error"], response.json()["message"])
    assert refusal == (400, code, message)
    assert client.get(f"{TABLES}/{authors}/schema", headers=admin).json() == before


def test_delete_table(client: TestClient, admin: dict[str, str], authors: str) -> None:
    add_author(client, admin, authors, "Ada")
    deleted = client.delete(f"{TABLES}/{authors}", headers=admin)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["tableName"] == authors
    assert authors not in listed_tables(client, admin)
    gone = client.get(f"{RECORDS}/{authors}", headers=admin)
    assert gone.status_code == 404
    assert client.get(f"{TABLES}/{authors}/schema", headers=admin).status_code == 404


def test_table_ddl_is_audited_with_the_caller(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    table = new_name("audited")
    caller = {**admin, "User-Agent": f"tables-test/{table}"}
    columns = [{"columnName": "title", "type": "string"}]
    assert (
        client.post(TABLES, json={"tableName": table, "columns": columns}, headers=caller).status_code == 201
    )
    altered = client.patch(f"{TABLES}/{table}/schema", json={"dropColumns": ["title"]}, headers=caller)
    assert altered.status_code == 200, altered.text
    assert client.delete(f"{TABLES}/{table}", headers=caller).status_code == 200
    entries = client.get("/api/logs/audits?module=DATABASE&limit=1000", headers=admin).json()
    mine = [e for e in entries if e["userAgent"] == caller["User-Agent"]]
    assert sorted((e["action"], e["actor"], e["outcome"], e["details"]["table"]) for e in mine) == [
        ("CREATE_TABLE", "api-key", "success", table),
        ("DELETE_TABLE", "api-key", "success", table),
        ("UPDATE_TABLE", "api-key", "success", table),
    ]
    by_action = {e["action"]: e["details"] for e in mine}
    assert by_action["CREATE_TABLE"]["columns"] == ["title"]
    assert by_action["UPDATE_TABLE"]["operations"] == ["Dropped column: title"]


def test_catalog_listings(client: TestClient, admin: dict[str, str], authors: str) -> None:
    assert "public" in client.get("/api/database/schemas", headers=admin).json()["schemas"]
    policies = client.get("/api/database/policies", headers=admin).json()["policies"]
    mine = [p for p in policies if p["tableName"] == authors]
    assert [p["policyName"] for p in mine] == ["project_admin_policy"]
    assert mine[0]["roles"] == ["project_admin"]
    assert mine[0]["cmd"] == "ALL"
    triggers = client.get("/api/database/triggers", headers=admin).json()["triggers"]
    assert [t["triggerName"] for t in triggers if t["tableName"] == authors] == [
        f"{authors}_update_timestamp"
    ]
    indexes = client.get("/api/database/indexes", headers=admin).json()["indexes"]
    mine_indexes = [i for i in indexes if i["tableName"] == authors]
    assert [i["isPrimary"] for i in mine_indexes].count(True) == 1
    assert any(i["isUnique"] and not i["isPrimary"] and "(name)" in i["indexDef"] for i in mine_indexes)
    bad = client.get("/api/database/indexes?schema=bad;name", headers=admin)
    assert bad.status_code == 400
    assert bad.json()["error"] == "DATABASE_INVALID_PARAMETER"


def test_functions_listing_shows_the_projects_own(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    function = new_name("fn_double")
    script = f"create function {function}(n int) returns int language sql immutable as $$ select n * 2 $$"
    assert client.post(RAW, json={"query": script}, headers=admin).status_code == 200
    listed = client.get("/api/database/functions", headers=admin).json()["functions"]
    mine = [f for f in listed if f["functionName"] == function]
    assert len(mine) == 1
    assert "cosine_distance" not in {f["functionName"] for f in listed}  # (pgvector's, in public: not listed)
    assert {k: v for k, v in mine[0].items() if k != "functionDef"} == {
        "functionName": function,
        "arguments": "n integer",
        "returnType": "integer",
        "language": "sql",
        "volatility": "IMMUTABLE",
        "securityDefiner": False,
    }
    assert "select n * 2" in mine[0]["functionDef"]
    # Nothing of Kilnbase's own or of an extension is listed in public: only functions these tests made.
    assert [f["functionName"] for f in listed if not f["functionName"].startswith("fn_")] == []


@pytest.mark.parametrize(
    "path", ["/api/database/tables", "/api/database/policies", "/api/database/migrations"]
)
def test_admin_only(client: TestClient, anon: dict[str, str], user: dict[str, str], path: str) -> None:
    # InsForge's `verifyAdmin`: no bearer, then the anon key (no valid token), then a user's token.
    for caller, status, error in (
        ({}, 401, "AUTH_INVALID_CREDENTIALS"),
        (anon, 401, "AUTH_UNAUTHORIZED"),
        (user, 403, "AUTH_UNAUTHORIZED"),
    ):
        refused = client.get(path, headers=caller)
        assert (refused.status_code, refused.json()["error"]) == (status, error), refused.text


def test_listing_a_schema_that_does_not_exist_is_empty_on_rest(
    client: TestClient, admin: dict[str, str]
) -> None:
    """InsForge lists a schema that does not exist as empty (its catalog query finds nothing); only the
    agent's listing tools make it a 404."""
    tables = client.get("/api/database/tables?schema=no_such_schema", headers=admin)
    indexes = client.get("/api/database/indexes?schema=no_such_schema", headers=admin)
    assert (tables.status_code, tables.json()) == (200, [])
    assert (indexes.status_code, indexes.json()) == (200, {"indexes": []})
