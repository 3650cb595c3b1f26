"""Column-level encryption (InsForge's `/api/database/encryption`): columns declared `encrypted` when a table
is made or altered hold ciphertext that the records API writes and reads as plaintext; raw SQL sees (and may
only write) ciphertext; what Postgres cannot compute from ciphertext is a 400 naming the column.

Each test makes the tables it reads, under names of its own. Rotation, which rewrites every encrypted column
of the database, has its own module (`test_column_encryption_rotation.py`)."""

from __future__ import annotations

import json
import re
from typing import Any, cast

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.database.conftest import NewName
from tests.support.app import agent_headers, mcp_call, services_of

TABLES = "/api/database/tables"
RECORDS = "/api/database/records"
RAW = "/api/database/advance/rawsql"
ENCRYPTION = "/api/database/encryption"
REPRESENTATION = {"Prefer": "return=representation"}
CIPHERTEXT = re.compile(r"v[0-9]+:[0-9a-f]{32}:[0-9a-f]{32}:[0-9a-f]*")


def column(name: str, kind: str, **extra: Any) -> dict[str, Any]:
    """A nullable column that is not unique, as the tables API takes it, with `extra` fields."""
    return {"columnName": name, "type": kind, "isNullable": True, "isUnique": False, **extra}


def create_table(
    client: TestClient, headers: dict[str, str], table: str, columns: list[dict[str, Any]]
) -> str:
    created = client.post(TABLES, json={"tableName": table, "columns": columns}, headers=headers)
    assert created.status_code == 201, created.text
    return table


def make_table(client: TestClient, headers: dict[str, str], table: str) -> None:
    columns = [
        column("name", "string"),
        column("ssn", "string", encrypted=True),
        column("age", "integer", encrypted=True),
        column("meta", "json", encrypted=True),
        column("ok", "boolean", encrypted=True),
    ]
    create_table(client, headers, table, columns)


def raw_rows(client: TestClient, admin: dict[str, str], query: str) -> list[dict[str, Any]]:
    response = client.post(RAW, json={"query": query}, headers=admin)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


@pytest.fixture
def people(client: TestClient, admin: dict[str, str], new_name: NewName) -> str:
    table = new_name("people")
    make_table(client, admin, table)
    return table


def insert(client: TestClient, admin: dict[str, str], table: str, row: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{RECORDS}/{table}", json=row, headers={**admin, **REPRESENTATION})
    assert response.status_code == 201, response.text
    return cast(dict[str, Any], response.json()[0])


def test_values_round_trip_as_plaintext_and_are_stored_as_ciphertext(
    client: TestClient, admin: dict[str, str], people: str
) -> None:
    row = {"name": "Ada", "ssn": "123-45-6789", "age": 36, "meta": {"tags": ["a"], "n": 1}, "ok": True}
    inserted = insert(client, admin, people, row)
    assert {k: inserted[k] for k in row} == row

    stored = raw_rows(client, admin, f"select ssn, age, meta, ok from {people}")[0]
    for column in ("ssn", "age", "meta", "ok"):
        assert CIPHERTEXT.fullmatch(stored[column]), stored[column]
    assert "123-45-6789" not in str(stored)

    read = client.get(f"{RECORDS}/{people}?select=name,ssn,years:age,meta,ok&name=eq.Ada", headers=admin)
    assert read.status_code == 200, read.text
    assert read.json() == [
        {"name": "Ada", "ssn": "123-45-6789", "years": 36, "meta": {"tags": ["a"], "n": 1}, "ok": True}
    ]
    one = client.get(
        f"{RECORDS}/{people}?id=eq.{inserted['id']}",
        headers={**admin, "Accept": "application/vnd.pgrst.object+json"},
    )
    assert one.status_code == 200, one.text
    assert one.json()["ssn"] == "123-45-6789"

    patched = client.patch(
        f"{RECORDS}/{people}?id=eq.{inserted['id']}",
        json={"ssn": "999-99-9999", "age": None},
        headers={**admin, **REPRESENTATION},
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()[0]["ssn"], patched.json()[0]["age"]) == ("999-99-9999", None)
    again = raw_rows(client, admin, f"select ssn, age from {people}")[0]
    assert CIPHERTEXT.fullmatch(again["ssn"]) and again["ssn"] != stored["ssn"]
    assert again["age"] is None


def test_the_check_constraint_refuses_plaintext_from_raw_sql(
    client: TestClient, admin: dict[str, str], people: str
) -> None:
    refused = client.post(
        RAW, json={"query": f"insert into {people} (ssn) values ('123-45-6789')"}, headers=admin
    )
    assert refused.status_code == 400, refused.text
    assert "enc_fmt_ssn" in refused.text
    insert(client, admin, people, {"name": "Bo", "ssn": "1"})
    overwritten = client.post(RAW, json={"query": f"update {people} set ssn = 'plain'"}, headers=admin)
    assert overwritten.status_code == 400, overwritten.text
    assert raw_rows(client, admin, f"select count(*) as n from {people} where ssn = 'plain'") == [{"n": 0}]


@pytest.mark.parametrize(
    ("query", "use"),
    [
        ("ssn=eq.x", "filtered on"),
        ("or=(name.eq.a,age.gt.3)", "filtered on"),
        ("order=age.desc", "ordered by"),
        ("select=age::text", "cast, aggregated or read by a JSON path"),
        ("select=meta->tags", "cast, aggregated or read by a JSON path"),
    ],
)
def test_what_postgres_would_compute_from_ciphertext_is_a_400_naming_the_column(
    client: TestClient, admin: dict[str, str], people: str, query: str, use: str
) -> None:
    response = client.get(f"{RECORDS}/{people}?{query}", headers=admin)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "0A000"
    assert use in body["message"]
    assert re.search(r"Column '(ssn|age|meta)'", body["message"]), body["message"]


def test_a_filtered_write_on_an_encrypted_column_changes_nothing(
    client: TestClient, admin: dict[str, str], people: str
) -> None:
    insert(client, admin, people, {"name": "Cy", "ssn": "1"})
    patched = client.patch(f"{RECORDS}/{people}?ssn=eq.1", json={"name": "Dee"}, headers=admin)
    deleted = client.delete(f"{RECORDS}/{people}?age=gt.1", headers=admin)
    assert (patched.status_code, deleted.status_code) == (400, 400), (patched.text, deleted.text)
    assert "Column 'ssn'" in patched.json()["message"]
    assert client.get(f"{RECORDS}/{people}?select=name", headers=admin).json() == [{"name": "Cy"}]


def test_csv_of_encrypted_columns_is_refused(client: TestClient, admin: dict[str, str], people: str) -> None:
    response = client.get(f"{RECORDS}/{people}", headers={**admin, "Accept": "text/csv"})
    assert response.status_code == 400, response.text
    assert "read as CSV" in response.json()["message"]
    plain = client.get(f"{RECORDS}/{people}?select=name", headers={**admin, "Accept": "text/csv"})
    assert plain.status_code == 200, plain.text


def test_a_value_the_declared_type_refuses_is_a_400_and_nothing_is_written(
    client: TestClient, admin: dict[str, str], people: str
) -> None:
    for bad in ({"age": "forty"}, {"age": True}, {"ok": "maybe"}):
        response = client.post(f"{RECORDS}/{people}", json=bad, headers=admin)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "22P02"
    assert client.get(f"{RECORDS}/{people}?select=id", headers=admin).json() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [(b'[{"name": "x"}, 5]', "All object keys must match"), (b'[{"ssn": "1"', "Empty or invalid json")],
)
def test_a_body_that_is_not_objects_is_a_400_not_a_crash_before_encrypting(
    client: TestClient, admin: dict[str, str], people: str, body: bytes, message: str
) -> None:
    """With `?columns=` an array body is not parsed before the statement, but a table with encrypted
    columns parses it to encrypt: an item that is not an object, or JSON that does not parse, was a 500."""
    refused = client.post(
        f"{RECORDS}/{people}?columns=name,ssn",
        headers={**admin, "Content-Type": "application/json"},
        content=body,
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "PGRST102" and refused.json()["message"] == message
    assert raw_rows(client, admin, f"select count(*) as n from {people}") == [{"n": 0}]


def test_the_table_schema_and_the_list_describe_encrypted_columns(
    client: TestClient, admin: dict[str, str], people: str
) -> None:
    schema = client.get(f"{TABLES}/{people}/schema", headers=admin).json()
    by_name = {c["columnName"]: c for c in schema["columns"]}
    assert (by_name["age"]["type"], by_name["age"]["encrypted"]) == ("integer", True)
    assert (by_name["meta"]["type"], by_name["meta"]["encrypted"]) == ("json", True)
    assert "encrypted" not in by_name["name"]

    listed = client.get(ENCRYPTION, headers=admin)
    assert listed.status_code == 200, listed.text
    mine = [c for c in listed.json()["encryptedColumns"] if c["table_name"] == people]
    assert [(c["column_name"], c["original_type"]) for c in mine] == [
        ("age", "integer"),
        ("meta", "jsonb"),
        ("ok", "boolean"),
        ("ssn", "text"),
    ]
    assert set(mine[0]) == {
        "id",
        "table_schema",
        "table_name",
        "column_name",
        "original_type",
        "key_version",
        "created_at",
    }
    assert (mine[0]["table_schema"], mine[0]["key_version"]) == ("public", 1)


def test_a_renamed_column_stays_encrypted_and_a_dropped_one_leaves_the_list(
    client: TestClient, admin: dict[str, str], people: str
) -> None:
    insert(client, admin, people, {"ssn": "s1"})
    body = {"updateColumns": [{"columnName": "ssn", "newColumnName": "tax_id"}], "dropColumns": ["age"]}
    altered = client.patch(f"{TABLES}/{people}/schema", json=body, headers=admin)
    assert altered.status_code == 200, altered.text
    assert client.get(f"{RECORDS}/{people}?select=tax_id", headers=admin).json() == [{"tax_id": "s1"}]
    listed = client.get(ENCRYPTION, headers=admin).json()["encryptedColumns"]
    assert sorted(c["column_name"] for c in listed if c["table_name"] == people) == ["meta", "ok", "tax_id"]
    assert client.delete(f"{TABLES}/{people}", headers=admin).status_code == 200
    listed = client.get(ENCRYPTION, headers=admin).json()["encryptedColumns"]
    assert [c for c in listed if c["table_name"] == people] == []


def test_a_column_added_encrypted_is_encrypted(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    table = create_table(client, admin, new_name("notes"), [column("title", "string")])
    add = {"addColumns": [column("body", "string", encrypted=True)]}
    assert client.patch(f"{TABLES}/{table}/schema", json=add, headers=admin).status_code == 200
    insert(client, admin, table, {"title": "t", "body": "secret words"})
    assert CIPHERTEXT.fullmatch(raw_rows(client, admin, f"select body from {table}")[0]["body"])
    assert client.get(f"{RECORDS}/{table}?select=body", headers=admin).json() == [{"body": "secret words"}]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"isUnique": True}, "Encrypted columns cannot have a unique constraint"),
        ({"isPrimaryKey": True}, "Encrypted columns cannot be primary keys"),
        ({"foreignKey": {"referenceTable": "x"}}, "Encrypted columns cannot have foreign key references"),
        ({"defaultValue": "abc"}, "Encrypted columns cannot have a default value"),
        ({"type": "bigint"}, "cannot be encrypted as type 'bigint'"),
        ({"encrypted": "yes"}, "encrypted: Expected boolean"),
    ],
)
def test_a_column_that_cannot_be_encrypted_is_a_400_and_no_table_is_made(
    client: TestClient, admin: dict[str, str], new_name: NewName, change: dict[str, Any], message: str
) -> None:
    table = new_name("refused")
    spec = column("c", "string", encrypted=True)
    response = client.post(TABLES, json={"tableName": table, "columns": [{**spec, **change}]}, headers=admin)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert client.get(f"{TABLES}/{table}/schema", headers=admin).status_code == 404


def test_a_foreign_key_on_a_column_added_encrypted_is_refused(
    client: TestClient, admin: dict[str, str], people: str
) -> None:
    body = {
        "addColumns": [column("ref", "string", encrypted=True)],
        "addForeignKeys": [
            {"referenceTable": people, "referenceColumns": [{"sourceColumn": "ref", "referenceColumn": "id"}]}
        ],
    }
    response = client.patch(f"{TABLES}/{people}/schema", json=body, headers=admin)
    assert response.status_code == 400, response.text
    assert "Cannot add foreign key to an encrypted column" in response.json()["message"]
    columns = client.get(f"{TABLES}/{people}/schema", headers=admin).json()["columns"]
    assert "ref" not in {c["columnName"] for c in columns}


def test_agent_keys_list_with_database_read_and_never_rotate(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    reader, writer, other = (
        agent_headers(client, admin, [scope]) for scope in ("database:read", "database:write", "storage:read")
    )
    assert client.get(ENCRYPTION, headers=reader).status_code == 200
    assert client.get(ENCRYPTION, headers=other).status_code == 403
    refused = client.post(f"{ENCRYPTION}/rotate", headers=writer)
    assert refused.status_code == 403, refused.text
    assert "may not rotate" in refused.json()["message"]
    # A schema change with an encrypted column is a schema change like any other: database:write.
    table = new_name("agent_made")
    make_table(client, writer, table)
    listed = client.get(ENCRYPTION, headers=reader).json()["encryptedColumns"]
    assert any(c["table_name"] == table for c in listed)


def test_end_users_cannot_see_the_registry(
    client: TestClient, admin: dict[str, str], anon: dict[str, str], user: dict[str, str]
) -> None:
    assert client.get(ENCRYPTION, headers=anon).status_code in (401, 403)
    assert client.get(ENCRYPTION, headers=user).status_code in (401, 403)
    assert client.post(f"{ENCRYPTION}/rotate", headers=user).status_code in (401, 403)
    for headers in (anon, user):
        exposed = client.get(f"{RECORDS}/encrypted_columns", headers={**headers, "Accept-Profile": "system"})
        assert exposed.status_code in (401, 403, 404, 406), exposed.text


def test_a_table_without_encrypted_columns_is_read_and_written_as_before(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    table = create_table(client, admin, new_name("plain"), [column("code", "string")])
    insert(client, admin, table, {"code": "b"})
    insert(client, admin, table, {"code": "a"})
    read = client.get(f"{RECORDS}/{table}?select=code&code=in.(a,b)&order=code.asc", headers=admin)
    assert read.json() == [{"code": "a"}, {"code": "b"}]
    assert raw_rows(client, admin, f"select code from {table} order by code") == [
        {"code": "a"},
        {"code": "b"},
    ]
    snapshot = services_of(client).core.schema_cache.snapshot
    assert snapshot.tables[("public", table)].encrypted == {}


def test_an_embed_may_not_read_or_order_by_an_encrypted_column(
    client: TestClient, admin: dict[str, str], people: str, new_name: NewName
) -> None:
    visits = new_name("visits")
    columns = [column("patient", "uuid", foreignKey={"referenceTable": people, "referenceColumn": "id"})]
    create_table(client, admin, visits, columns)
    patient = insert(client, admin, people, {"name": "Di", "ssn": "s"})
    insert(client, admin, visits, {"patient": patient["id"]})
    allowed = client.get(f"{RECORDS}/{visits}?select=patient,{people}(name)", headers=admin)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json() == [{"patient": patient["id"], people: {"name": "Di"}}]
    for query in (
        f"select=*,{people}(*)",
        f"select=id,{people}(ssn)",
        f"select=id,{people}(name)&order={people}(ssn)",
    ):
        refused = client.get(f"{RECORDS}/{visits}?{query}", headers=admin)
        assert refused.status_code == 400, (query, refused.text)
        assert "Column 'ssn'" in refused.json()["message"] or "Column 'age'" in refused.json()["message"]


def test_a_read_with_a_planned_count_is_decrypted_too(
    client: TestClient, admin: dict[str, str], people: str
) -> None:
    insert(client, admin, people, {"name": "Ed", "ssn": "e-1"})
    read = client.get(f"{RECORDS}/{people}?select=ssn", headers={**admin, "Prefer": "count=estimated"})
    assert read.status_code == 200, read.text
    assert read.json() == [{"ssn": "e-1"}]


def test_an_existing_column_is_encrypted_with_its_values(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    columns = [
        column("label", "string"),
        column("score", "integer", defaultValue="7"),
        column("doc", "json"),
        column("seen", "datetime"),
    ]
    table = create_table(client, admin, new_name("legacy"), columns)
    rows = [
        {"label": "a", "score": 3, "doc": {"k": [1, "x"]}, "seen": "2024-02-29T10:00:00+00:00"},
        {"label": "b", "score": None, "doc": "just text", "seen": None},
    ]
    assert client.post(f"{RECORDS}/{table}", json=rows, headers=admin).status_code == 201
    before = client.get(f"{RECORDS}/{table}?select=label,score,doc,seen&order=label", headers=admin).json()

    for name, migrated in (("score", 1), ("doc", 2), ("seen", 1)):
        response = client.post(f"{TABLES}/{table}/encrypt-column", json={"column": name}, headers=admin)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "success": True,
            "message": f'Column "{name}" in table "{table}" has been encrypted',
            "rowsMigrated": migrated,
        }
    stored = raw_rows(client, admin, f"select score, doc from {table} where label = 'a'")[0]
    assert CIPHERTEXT.fullmatch(stored["score"]) and CIPHERTEXT.fullmatch(stored["doc"])
    after = client.get(f"{RECORDS}/{table}?select=label,score,doc,seen&order=label", headers=admin).json()
    assert after == before
    # The default would have been stored as plaintext: it is gone, and a new row's score is null.
    assert insert(client, admin, table, {"label": "c"})["score"] is None

    again = client.post(f"{TABLES}/{table}/encrypt-column", json={"column": "score"}, headers=admin)
    assert again.status_code == 409, again.text
    assert again.json()["message"] == 'Column "score" is already encrypted'


def test_every_process_hears_that_an_existing_column_is_now_encrypted(
    client: TestClient, admin: dict[str, str], new_name: NewName, database_url: str
) -> None:
    """Another server process learns of an encrypted column from `NOTIFY kilnbase_schema` (until it does, it
    would answer ciphertext): the rewrite runs with triggers off, event triggers included, so it says so."""
    table = create_table(client, admin, new_name("heard"), [column("label", "string")])
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("listen kilnbase_schema")
        response = client.post(f"{TABLES}/{table}/encrypt-column", json={"column": "label"}, headers=admin)
        assert response.status_code == 200, response.text
        heard = [n.payload for n in listener.notifies(timeout=2, stop_after=20)]
    assert "ENCRYPT COLUMN" in heard


@pytest.mark.parametrize(
    ("target", "status", "message"),
    [
        ("nope", 404, 'Column "nope" not found in table'),
        ("id", 400, "cannot be encrypted: it is a system column, part of a key"),
        ("code", 400, "cannot be encrypted: it is a system column, part of a key"),
        ("big", 400, "cannot be encrypted as type bigint"),
        ("", 400, "Column name is required"),
    ],
)
def test_a_column_that_cannot_be_encrypted_in_place_is_refused_unchanged(
    client: TestClient, admin: dict[str, str], new_name: NewName, target: str, status: int, message: str
) -> None:
    columns = [column("code", "string", isUnique=True), column("big", "bigint")]
    table = create_table(client, admin, new_name("keep"), columns)
    insert(client, admin, table, {"code": "c1", "big": 5})
    response = client.post(f"{TABLES}/{table}/encrypt-column", json={"column": target}, headers=admin)
    assert response.status_code == status, response.text
    assert message in response.json()["message"]
    assert raw_rows(client, admin, f"select code, big from {table}") == [{"code": "c1", "big": 5}]


def test_a_column_a_view_reads_is_refused_with_postgres_words(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    table = create_table(client, admin, new_name("viewed"), [column("n", "integer")])
    raw_rows(client, admin, f"create view {table}_v as select n from {table}")
    response = client.post(f"{TABLES}/{table}/encrypt-column", json={"column": "n"}, headers=admin)
    assert response.status_code == 400, response.text
    assert "used by a view" in response.json()["message"]


def test_an_agent_key_may_not_encrypt_an_existing_column(
    client: TestClient, admin: dict[str, str], people: str
) -> None:
    writer = agent_headers(client, admin, ["database:write"])
    response = client.post(f"{TABLES}/{people}/encrypt-column", json={"column": "name"}, headers=writer)
    assert response.status_code == 403, response.text
    assert "may not encrypt an existing column" in response.json()["message"]
    schema = client.get(f"{TABLES}/{people}/schema", headers=admin).json()["columns"]
    assert "encrypted" not in next(c for c in schema if c["columnName"] == "name")


def test_an_encrypted_column_takes_no_default_later_either(
    client: TestClient, admin: dict[str, str], people: str
) -> None:
    body = {"updateColumns": [{"columnName": "ssn", "defaultValue": "000"}]}
    response = client.patch(f"{TABLES}/{people}/schema", json=body, headers=admin)
    assert response.status_code == 400, response.text
    assert response.json()["message"] == "Encrypted columns cannot have a default value"
    ssn = next(
        c
        for c in client.get(f"{TABLES}/{people}/schema", headers=admin).json()["columns"]
        if c["columnName"] == "ssn"
    )
    assert ssn["defaultValue"] is None


def test_the_registry_is_written_only_through_its_checks(
    client: TestClient, admin: dict[str, str], people: str
) -> None:
    forged = client.post(
        RAW,
        json={
            "query": "insert into system.encrypted_columns (table_oid, column_num, original_type, "
            f"key_version) values ('{people}'::regclass, 1, 'text', 1)"
        },
        headers=admin,
    )
    assert forged.status_code in (400, 403), forged.text
    assert "permission denied" in forged.json()["message"]
    own_table = client.post(
        RAW,
        json={
            "query": "select system.register_encrypted_column("
            "'system.audit_logs'::regclass, 'action', 'text', 1)"
        },
        headers=admin,
    )
    assert own_table.status_code in (400, 403), own_table.text
    assert "only a table project_admin owns" in own_table.json()["message"]


def test_the_mcp_tool_lists_encrypted_columns(client: TestClient, admin: dict[str, str], people: str) -> None:
    reader = agent_headers(client, admin, ["database:read"])
    answer = mcp_call(client, reader, "list-encrypted-columns", {})
    listed = [c["column_name"] for c in json.loads(answer)["encryptedColumns"] if c["table_name"] == people]
    assert listed == ["age", "meta", "ok", "ssn"]
