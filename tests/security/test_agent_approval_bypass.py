"""No door around approvals: an agent key with `database:write` whose change would wait for a person's
approval (`run-raw-sql`, `apply-migration`, `delete-table`) gets nothing done by sending it another way."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from tests.security.conftest import OwnerSql, admin_table
from tests.support.app import agent_headers, mcp_call


@pytest.fixture(scope="module")
def writer(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    """An agent key that may change the database (but not without approval where a change is destructive)."""
    return agent_headers(client, admin, ["database:write"], "writer")


@pytest.fixture
def important(client: TestClient, admin: dict[str, str]) -> str:
    """A table of project_admin's with one row worth keeping."""
    return admin_table(client, admin, "important", ["keep"])


def rows_in(owner_sql: OwnerSql, table: str) -> list[dict[str, object]]:
    return owner_sql(f"select id, note from public.{table} order by id")


@pytest.mark.parametrize(
    ("sql", "truncate"),
    [
        ("DROP TABLE public.{table};", False),
        ("DELETE FROM public.{table};", False),
        ("TRUNCATE public.{table};", False),
        ("INSERT INTO public.{table} VALUES (2, 'new');", True),
    ],
    ids=["drop", "delete-all", "truncate-statement", "truncate-option"],
)
def test_an_agents_destructive_import_is_refused_and_changes_nothing(
    client: TestClient, writer: dict[str, str], important: str, owner_sql: OwnerSql, sql: str, truncate: bool
) -> None:
    response = client.post(
        "/api/database/advance/import",
        headers=writer,
        files={"file": ("changes.sql", sql.format(table=important).encode(), "application/sql")},
        data={"truncate": "true" if truncate else "false"},
    )
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "FORBIDDEN" and "/api/database/migrations" in body["nextActions"]
    assert rows_in(owner_sql, important) == [{"id": 1, "note": "keep"}]


def test_an_agents_harmless_import_still_runs(
    client: TestClient, writer: dict[str, str], important: str, owner_sql: OwnerSql
) -> None:
    sql = f"INSERT INTO public.{important} VALUES (2, 'added');".encode()
    response = client.post(
        "/api/database/advance/import", headers=writer, files={"file": ("more.sql", sql, "application/sql")}
    )
    assert response.status_code == 200, response.text
    assert rows_in(owner_sql, important) == [{"id": 1, "note": "keep"}, {"id": 2, "note": "added"}]


def columns_of(owner_sql: OwnerSql, table: str) -> list[str]:
    rows = owner_sql(
        "select column_name from information_schema.columns "
        "where table_schema = 'public' and table_name = %s order by ordinal_position",
        table,
    )
    return [str(row["column_name"]) for row in rows]


def test_an_agent_dropping_a_column_over_rest_waits_for_approval(
    client: TestClient, writer: dict[str, str], important: str, owner_sql: OwnerSql
) -> None:
    path = f"/api/database/tables/{important}/schema"
    response = client.patch(path, headers=writer, json={"dropColumns": ["note"]})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending_approval"
    assert columns_of(owner_sql, important) == ["id", "note"]
    assert rows_in(owner_sql, important) == [{"id": 1, "note": "keep"}]
    added = client.patch(
        path, headers=writer, json={"addColumns": [{"columnName": "extra", "type": "string"}]}
    )
    assert added.status_code == 200, added.text  # a change that loses nothing still runs at once


def test_an_agent_dropping_a_column_over_mcp_waits_for_approval(
    client: TestClient, writer: dict[str, str], important: str, owner_sql: OwnerSql
) -> None:
    call = {
        "name": "update-table-schema",
        "arguments": {"tableName": important, "changes": {"dropColumns": ["note"]}},
    }
    response = client.post(
        "/mcp",
        headers={
            **writer,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call},
    )
    assert response.status_code == 200, response.text
    assert "pending_approval" in response.json()["result"]["content"][0]["text"]
    assert columns_of(owner_sql, important) == ["id", "note"]


@pytest.mark.parametrize(
    "change",
    [
        {"isActive": False},
        {"expiresAt": "2000-01-01T00:00:00Z"},
        # A few seconds away: the same delete, a few seconds later.
        {"expiresAt": (datetime.now(UTC) + timedelta(seconds=5)).isoformat()},
    ],
    ids=["switched-off", "expired", "expiring-at-once"],
)
def test_an_agent_cannot_delete_a_secret_by_updating_it(
    client: TestClient, admin: dict[str, str], change: dict[str, object]
) -> None:
    """`delete-secret` waits for approval; switching the secret off or expiring it now is the same delete."""
    agent = agent_headers(client, admin, ["secrets:write"], "keeper")
    key = f"KEEP_{secrets.token_hex(4).upper()}"
    assert client.post("/api/secrets", headers=admin, json={"key": key, "value": "v1"}).status_code == 201
    held = client.delete(f"/api/secrets/{key}", headers=agent)
    assert held.status_code == 202 and held.json()["status"] == "pending_approval"
    response = client.put(f"/api/secrets/{key}", headers=agent, json=change)
    assert response.status_code == 403, response.text
    assert "DELETE /api/secrets/:key" in response.json()["nextActions"]
    assert client.get(f"/api/secrets/{key}", headers=admin).json() == {"key": key, "value": "v1"}
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    assert client.put(f"/api/secrets/{key}", headers=agent, json={"expiresAt": later}).status_code == 200


@pytest.fixture
def filled_bucket(client: TestClient, admin: dict[str, str]) -> str:
    """A bucket holding two files worth keeping, `a.txt` and `docs/b.txt`."""
    bucket = f"keep-{secrets.token_hex(4)}"
    assert client.post("/api/storage/buckets", headers=admin, json={"bucketName": bucket}).status_code == 201
    for key in ("a.txt", "docs/b.txt"):
        stored = client.put(
            f"/api/storage/buckets/{bucket}/objects/{key}",
            headers=admin,
            files={"file": ("f.txt", b"keep", "text/plain")},
        )
        assert stored.status_code == 200, stored.text
    return bucket


def keys_in(client: TestClient, admin: dict[str, str], bucket: str) -> list[str]:
    listed = client.get(f"/api/storage/buckets/{bucket}/objects", headers=admin)
    assert listed.status_code == 200, listed.text
    return sorted(item["key"] for item in listed.json()["data"])


def test_an_agent_emptying_a_bucket_waits_for_approval(
    client: TestClient, admin: dict[str, str], filled_bucket: str
) -> None:
    """`delete-bucket` waits for approval while the bucket holds files; deleting them first, one by one or
    in bulk, over REST or `/mcp`, waits too."""
    agent = agent_headers(client, admin, ["storage:write"], "cleaner")
    objects = f"/api/storage/buckets/{filled_bucket}/objects"
    one = client.delete(f"{objects}/docs/b.txt", headers=agent)
    assert one.status_code == 202, one.text
    assert one.json()["status"] == "pending_approval" and "1 object" in one.json()["reason"]
    bulk = client.request("DELETE", objects, headers=agent, json={"keys": ["a.txt", "docs/b.txt"]})
    assert bulk.status_code == 202, bulk.text
    assert bulk.json()["status"] == "pending_approval" and "2 object" in bulk.json()["reason"]
    held = mcp_call(client, agent, "delete-objects", {"bucketName": filled_bucket, "keys": ["a.txt"]})
    assert "pending_approval" in held
    assert keys_in(client, admin, filled_bucket) == ["a.txt", "docs/b.txt"]

    missing = client.request("DELETE", objects, headers=agent, json={"keys": ["nothing.txt"]})
    assert missing.status_code == 200, missing.text  # deletes nothing: not held
    assert missing.json()["results"] == [{"key": "nothing.txt", "status": "notFound"}]

    approved = client.post(f"/api/approvals/{one.json()['changeRequestId']}/approve", headers=admin, json={})
    assert approved.status_code == 200 and approved.json()["status"] == "done", approved.text
    assert keys_in(client, admin, filled_bucket) == ["a.txt"]  # exactly the key the agent named


def test_an_agent_purging_realtime_messages_waits_for_approval(
    client: TestClient, admin: dict[str, str], owner_sql: OwnerSql
) -> None:
    """`delete-channel` waits for approval; purging every stored message, on every channel, waits too."""
    prefix = f"keep{secrets.token_hex(3)}"
    made = client.post("/api/realtime/channels", headers=admin, json={"pattern": f"{prefix}:%"})
    assert made.status_code in (200, 201), made.text
    published = mcp_call(
        client, admin, "publish-message", {"channel": f"{prefix}:1", "event": "kept", "payload": {"n": 1}}
    )
    assert '"kept"' in published
    agent = agent_headers(client, admin, ["realtime:write"], "purger")

    def stored() -> int:
        return int(owner_sql("select count(*) as n from realtime.messages")[0]["n"])

    before = stored()
    assert before >= 1
    held = client.delete("/api/realtime/messages", headers=agent)
    assert held.status_code == 202, held.text
    assert held.json()["status"] == "pending_approval"
    assert "pending_approval" in mcp_call(client, agent, "purge-messages", {})
    assert stored() == before

    approved = client.post(f"/api/approvals/{held.json()['changeRequestId']}/approve", headers=admin, json={})
    assert approved.status_code == 200 and approved.json()["status"] == "done", approved.text
    assert approved.json()["result"] == {"deleted": before}
    assert stored() == 0
    mcp_call(client, admin, "publish-message", {"channel": f"{prefix}:2", "event": "e", "payload": {}})
    purged = client.delete("/api/realtime/messages", headers=admin)  # a person's purge runs at once
    assert purged.status_code == 200 and purged.json() == {"deleted": 1}, purged.text


@pytest.fixture(scope="module")
def record_writer(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    """An agent key that may write rows through the records API."""
    return agent_headers(client, admin, ["records:write"], "rows")


@pytest.mark.parametrize("method", ["DELETE", "PATCH"])
def test_an_agents_records_write_without_a_filter_is_refused(
    client: TestClient,
    record_writer: dict[str, str],
    admin: dict[str, str],
    important: str,
    owner_sql: OwnerSql,
    method: str,
) -> None:
    """`run-raw-sql` waits for approval on DELETE or UPDATE without WHERE; the records API's unfiltered
    write, which no tool could run for an approval, is refused to an agent instead."""
    records = f"/api/database/records/{important}"
    body = {"note": "gone"} if method == "PATCH" else None
    refused = client.request(method, records, headers=record_writer, json=body)
    assert refused.status_code == 403, refused.text
    error = refused.json()
    assert error["error"] == "FORBIDDEN" and "no filter" in error["message"]
    assert "id=eq.1" in error["nextActions"] and "run-raw-sql" in error["nextActions"]
    assert rows_in(owner_sql, important) == [{"id": 1, "note": "keep"}]

    added = client.post(records, headers=record_writer, json=[{"id": 2, "note": "scratch"}])
    assert added.status_code == 201, added.text  # inserts need no filter
    filtered = client.request(method, f"{records}?id=eq.2", headers=record_writer, json=body)
    assert filtered.status_code == 204, filtered.text  # a filtered write runs
    assert rows_in(owner_sql, important)[0] == {"id": 1, "note": "keep"}

    person = client.request(method, records, headers=admin, json=body)
    assert person.status_code == 204, person.text  # PostgREST's unfiltered write, for people
    everything = [] if method == "DELETE" else [{"id": 1, "note": "gone"}, {"id": 2, "note": "gone"}]
    assert rows_in(owner_sql, important) == everything


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM public.{table}",
        "UPDATE public.{table} SET note = 'gone'",
        "TRUNCATE public.{table}",
        "DELETE FROM public.{table} WHERE true",
        "WITH gone AS (DELETE FROM public.{table} RETURNING 1) SELECT count(*) FROM gone",
        "EXPLAIN ANALYZE DELETE FROM public.{table}",
        "PREPARE wipe_{table} AS DELETE FROM public.{table}; EXECUTE wipe_{table}",
        "MERGE INTO public.{table} t USING (SELECT 1 AS id) s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "DO $$ BEGIN TRUNCATE public.{table}; END $$",
        "CREATE FUNCTION public.wipe_{table}() RETURNS void LANGUAGE sql AS 'DELETE FROM public.{table}'; "
        "SELECT public.wipe_{table}()",
        "CREATE FUNCTION public.wipe_{table}() RETURNS void LANGUAGE plpgsql AS "
        "$$ BEGIN UPDATE public.{table} SET note = 'gone'; END $$; SELECT public.wipe_{table}()",
    ],
    ids=[
        "delete",
        "update",
        "truncate",
        "where-true",
        "cte",
        "explain-analyze",
        "prepare",
        "merge-delete",
        "do-block",
        "sql-function",
        "plpgsql-function",
    ],
)
def test_an_agents_sql_that_empties_a_table_waits_for_approval(
    client: TestClient, writer: dict[str, str], important: str, owner_sql: OwnerSql, sql: str
) -> None:
    """`run-raw-sql` and `apply-migration` hold what the dry run rates DANGER; the rows deleted or
    overwritten wholesale inside a CTE, EXPLAIN ANALYZE, PREPARE, MERGE, a DO block or a function's body
    are rated so too."""
    query = sql.format(table=important)
    raw = client.post("/api/database/advance/rawsql", headers=writer, json={"query": query})
    assert raw.status_code == 202, raw.text
    assert raw.json()["status"] == "pending_approval"
    body = {"version": str(secrets.randbelow(10**9) + 1), "name": "wipe", "sql": query}
    migration = client.post("/api/database/migrations", headers=writer, json=body)
    assert migration.status_code == 202, migration.text
    assert "pending_approval" in mcp_call(client, writer, "run-raw-sql", {"query": query})
    assert rows_in(owner_sql, important) == [{"id": 1, "note": "keep"}]


def test_an_agents_sql_that_names_its_rows_still_runs(
    client: TestClient, writer: dict[str, str], important: str, owner_sql: OwnerSql
) -> None:
    query = f"UPDATE public.{important} SET note = 'kept' WHERE id = 1"
    response = client.post("/api/database/advance/rawsql", headers=writer, json={"query": query})
    assert response.status_code == 200, response.text
    assert rows_in(owner_sql, important) == [{"id": 1, "note": "kept"}]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM public.{table}; SELECT count(*) FROM auth.users",
        "DELETE FROM realtime.messages; DELETE FROM public.{table} WHERE id = 1",
        "INSERT INTO storage.objects (bucket, key, size) SELECT bucket, key, 0 FROM storage.objects "
        "ON CONFLICT (bucket, key) DO UPDATE SET blob_id = gen_random_uuid(), size = 0; "
        "DELETE FROM public.{table} WHERE id = 1",
    ],
    ids=["hidden-by-a-read", "kilnbase-rows", "kilnbase-rows-by-upsert"],
)
def test_an_agents_sql_naming_kilnbases_schemas_is_still_rated(
    client: TestClient, writer: dict[str, str], important: str, owner_sql: OwnerSql, sql: str
) -> None:
    """Migrations may not touch Kilnbase's own schemas, so their dry run calls such SQL invalid; raw SQL may
    read them. That refusal must not hide a wholesale delete from the approval gate, nor let an agent change
    Kilnbase's own rows (files, messages, users), which have tools of their own, without a person."""
    query = sql.format(table=important)
    response = client.post("/api/database/advance/rawsql", headers=writer, json={"query": query})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending_approval"
    assert rows_in(owner_sql, important) == [{"id": 1, "note": "keep"}]


def test_an_agent_cannot_mint_or_delete_s3_access_keys(client: TestClient, admin: dict[str, str]) -> None:
    """An S3 access key would be a credential of the agent's own making: it would outlive the agent key,
    reach storage past its scopes, and delete objects past the approval an agent's deletion waits for."""
    storage_agent = agent_headers(client, admin, ["storage:write"], "storage")
    kept = client.post("/api/storage/s3/access-keys", headers=admin, json={"description": "ci"})
    assert kept.status_code == 201, kept.text

    minted = client.post("/api/storage/s3/access-keys", headers=storage_agent, json={"description": "mine"})
    deleted = client.delete(f"/api/storage/s3/access-keys/{kept.json()['id']}", headers=storage_agent)
    listed = client.get("/api/storage/s3/access-keys", headers=storage_agent)

    assert (minted.status_code, minted.json()["error"]) == (403, "FORBIDDEN")
    assert (deleted.status_code, deleted.json()["error"]) == (403, "FORBIDDEN")
    assert listed.status_code == 200
    descriptions = [key["description"] for key in listed.json()]
    assert "mine" not in descriptions
    assert "ci" in descriptions
    assert all("secretAccessKey" not in key for key in listed.json())
