"""Foreign keys through the tables API in InsForge's current shape (`{referenceTable, referenceColumns:
[{sourceColumn, referenceColumn}], onDelete, onUpdate}`, one entry per constraint, composite keys included),
refusals that name the bad reference, and dropping a table that is not there."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.database.conftest import NewName

TABLES = "/api/database/tables"


def make_table(client: TestClient, admin: dict[str, str], name: str, columns: list[dict[str, Any]]) -> None:
    response = client.post(TABLES, json={"tableName": name, "columns": columns}, headers=admin)
    assert response.status_code == 201, response.text


def alter(client: TestClient, admin: dict[str, str], table: str, body: dict[str, Any]) -> Any:
    return client.patch(f"{TABLES}/{table}/schema", json=body, headers=admin)


def test_add_foreign_keys_in_insforges_shape_and_read_them_back(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    parents, children = new_name("parents"), new_name("children")
    make_table(
        client,
        admin,
        parents,
        [
            {"columnName": "code", "type": "string", "isNullable": False, "isUnique": False},
            {"columnName": "region", "type": "string", "isNullable": False, "isUnique": False},
        ],
    )
    raw = {"query": f'alter table "{parents}" add unique (code, region)'}
    assert client.post("/api/database/advance/rawsql", json=raw, headers=admin).status_code == 200
    make_table(
        client,
        admin,
        children,
        [
            {"columnName": "parent_id", "type": "uuid", "isNullable": True, "isUnique": False},
            {"columnName": "code", "type": "string", "isNullable": True, "isUnique": False},
            {"columnName": "region", "type": "string", "isNullable": True, "isUnique": False},
        ],
    )
    body = {
        "addForeignKeys": [
            {
                "referenceTable": parents,
                "referenceColumns": [{"sourceColumn": "parent_id", "referenceColumn": "id"}],
                "onDelete": "CASCADE",
                "onUpdate": "NO ACTION",
            },
            {
                "referenceTable": parents,
                "referenceColumns": [
                    {"sourceColumn": "code", "referenceColumn": "code"},
                    {"sourceColumn": "region", "referenceColumn": "region"},
                ],
                "onDelete": "SET NULL",
                "onUpdate": "CASCADE",
            },
        ]
    }
    response = alter(client, admin, children, body)
    assert response.status_code == 200, response.text
    assert response.json()["operations"] == [
        "Added foreign key constraint on column(s): parent_id",
        "Added foreign key constraint on column(s): code, region",
    ]
    schema = client.get(f"{TABLES}/{children}/schema", headers=admin).json()
    by_name = {fk["constraintName"]: fk for fk in schema["foreignKeys"]}
    single = f"fk_parent_id_{parents}_id"
    composite = f"fk_code_region_{parents}_code_region"
    assert by_name[single] == {
        "constraintName": single,
        "referenceTable": parents,
        "referenceColumns": [{"sourceColumn": "parent_id", "referenceColumn": "id"}],
        "onDelete": "CASCADE",
        "onUpdate": "NO ACTION",
    }
    assert by_name[composite]["referenceColumns"] == [
        {"sourceColumn": "code", "referenceColumn": "code"},
        {"sourceColumn": "region", "referenceColumn": "region"},
    ]
    assert (by_name[composite]["onDelete"], by_name[composite]["onUpdate"]) == ("SET NULL", "CASCADE")

    dropped = alter(client, admin, children, {"dropForeignKeys": [composite]})
    assert dropped.json()["operations"] == [f"Dropped foreign key constraint: {composite}"]
    again = alter(client, admin, children, {"dropForeignKeys": [composite]})
    assert (again.status_code, again.json()["error"], again.json()["message"]) == (
        404,
        "DATABASE_NOT_FOUND",
        f"Foreign key constraint '{composite}' does not exist on this table.",
    )


def test_create_table_takes_table_level_foreign_keys(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    parents, children = new_name("parents"), new_name("children")
    make_table(client, admin, parents, [{"columnName": "name", "type": "string", "isNullable": True}])
    body = {
        "tableName": children,
        "columns": [{"columnName": "parent_id", "type": "uuid", "isNullable": True, "isUnique": False}],
        "foreignKeys": [
            {
                "referenceTable": parents,
                "referenceColumns": [{"sourceColumn": "parent_id", "referenceColumn": "id"}],
                "onDelete": "RESTRICT",
                "onUpdate": "RESTRICT",
            }
        ],
    }
    assert client.post(TABLES, json=body, headers=admin).status_code == 201
    schema = client.get(f"{TABLES}/{children}/schema", headers=admin).json()
    assert [fk["referenceTable"] for fk in schema["foreignKeys"]] == [parents]


def test_a_bad_reference_is_a_400_that_names_it(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    parents, children = new_name("parents"), new_name("children")
    make_table(client, admin, parents, [{"columnName": "name", "type": "string", "isNullable": True}])
    make_table(client, admin, children, [{"columnName": "parent_id", "type": "uuid", "isNullable": True}])

    def refused(fk: dict[str, Any]) -> tuple[int, str, str, str]:
        response = alter(client, admin, children, {"addForeignKeys": [fk]})
        body = response.json()
        return response.status_code, body["error"], body["message"], body.get("nextActions", "")

    pair = [{"sourceColumn": "parent_id", "referenceColumn": "id"}]
    status, code, message, hint = refused({"referenceTable": "no_such_table", "referenceColumns": pair})
    assert (status, code, message) == (
        400,
        "DATABASE_VALIDATION_ERROR",
        'relation "no_such_table" does not exist',
    )
    assert "addForeignKeys.0" in hint and "no_such_table" in hint

    wrong_column = [{"sourceColumn": "parent_id", "referenceColumn": "nope"}]
    status, code, message, _ = refused({"referenceTable": parents, "referenceColumns": wrong_column})
    assert (status, code) == (400, "DATABASE_VALIDATION_ERROR") and '"nope"' in message

    not_unique = [{"sourceColumn": "parent_id", "referenceColumn": "name"}]
    status, code, message, _ = refused({"referenceTable": parents, "referenceColumns": not_unique})
    assert (status, code) == (400, "DATABASE_VALIDATION_ERROR") and parents in message

    status, code, message, _ = refused({"referenceTable": parents, "referenceColumns": []})
    assert (status, code, message) == (
        400,
        "INVALID_INPUT",
        "addForeignKeys.0.referenceColumns: At least one column mapping is required",
    )
    status, code, message, _ = refused(
        {"referenceTable": parents, "referenceColumns": pair, "onDelete": "EXPLODE"}
    )
    assert (status, code) == (400, "INVALID_INPUT") and message.startswith(
        "addForeignKeys.0.onDelete: Invalid enum"
    )
    system = [{"sourceColumn": "created_at", "referenceColumn": "id"}]
    status, code, message, _ = refused({"referenceTable": parents, "referenceColumns": system})
    assert (status, code, message) == (400, "DATABASE_FORBIDDEN", "cannot add foreign key on system columns")
    # Nothing of a refused request is kept.
    assert client.get(f"{TABLES}/{children}/schema", headers=admin).json()["foreignKeys"] == []


def test_deleting_a_table_that_is_not_there_is_a_404(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    missing = client.delete(f"{TABLES}/{new_name('ghost')}", headers=admin)
    assert (missing.status_code, missing.json()["error"], missing.json()["message"]) == (
        404,
        "DATABASE_NOT_FOUND",
        "table not found",
    )
    real = new_name("real")
    make_table(client, admin, real, [{"columnName": "name", "type": "string", "isNullable": True}])
    deleted = client.delete(f"{TABLES}/{real}", headers=admin)
    assert (deleted.status_code, deleted.json()["message"]) == (200, "table deleted successfully")
