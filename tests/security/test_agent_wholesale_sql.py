"""No door around approvals by SQL that names a column: an agent key's raw SQL (owner-level too), migration,
import or bulk upsert that deletes or updates every row of a table of two rows or more waits for a person (or,
for an import or a multipart bulk upload, which no tool runs, is refused), whatever its WHERE says; the
records API's upsert that updates every row, in any form, is refused as its PATCH is. Ordinary agent SQL and
upserts, and everything people run, commit at once."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.security.conftest import KEPT, OwnerSql, admin_table, assert_forbidden, table_notes
from tests.support.app import agent_headers, mcp_call

WHOLESALE = [
    "DELETE FROM public.{table} WHERE id IS NOT NULL",
    "UPDATE public.{table} SET note = 'gone' WHERE id > 0",
    "INSERT INTO public.{table} SELECT id, 'gone' FROM public.{table} "
    "ON CONFLICT (id) DO UPDATE SET note = excluded.note",
    # Deleted, then as many rows put back: the table holds as many rows as before, none of them kept.
    "DELETE FROM public.{table} WHERE id > 0; INSERT INTO public.{table} VALUES (1, 'new'), (2, 'new'), "
    "(3, 'new')",
    # Deleted, then more rows than it held put in: the table holds more rows than were deleted.
    "DELETE FROM public.{table} WHERE note = 'keep'; "
    "INSERT INTO public.{table} SELECT g, 'new' FROM generate_series(10, 30) AS g",
    "UPDATE public.{table} SET note = 'gone' WHERE id = 1; UPDATE public.{table} SET note = 'gone' "
    "WHERE id <> 1",
]
WHOLESALE_IDS = ["delete", "update", "upsert", "delete-reinsert", "delete-insert-more", "in-two-parts"]


@pytest.fixture(scope="module")
def writer(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    return agent_headers(client, admin, ["database:write"], "bulk")


def approve(client: TestClient, admin: dict[str, str], request_id: str) -> dict[str, object]:
    pending = client.get(f"/api/approvals/{request_id}", headers=admin)
    assert pending.status_code == 200 and pending.json()["status"] == "pending", pending.text
    approved = client.post(f"/api/approvals/{request_id}/approve", headers=admin, json={})
    assert approved.status_code == 200, approved.text
    decided: dict[str, object] = approved.json()
    assert decided["status"] == "done", decided
    return decided


@pytest.mark.parametrize("sql", WHOLESALE, ids=WHOLESALE_IDS)
def test_an_agents_raw_sql_that_changes_every_row_waits_for_approval(
    client: TestClient,
    admin: dict[str, str],
    writer: dict[str, str],
    three_rows: str,
    owner_sql: OwnerSql,
    sql: str,
) -> None:
    """The WHERE names a column, so the dry run rates it WARNING at most; the rows it changed say it all."""
    query = sql.format(table=three_rows)
    held = client.post("/api/database/advance/rawsql", headers=writer, json={"query": query})
    assert held.status_code == 202, held.text
    body = held.json()
    assert body["status"] == "pending_approval"
    assert f"public.{three_rows}" in body["reason"] and "3 rows" in body["reason"], body
    assert table_notes(owner_sql, three_rows) == KEPT
    # The attempt is in the audit trail, as held, beside the change request it became.
    tried = owner_sql(
        "select outcome, agent_key is not null as by_agent, details->>'heldFor' as held_for "
        "from system.audit_logs where action = 'EXECUTE_RAW_SQL' and details->>'query' = %s",
        query[:300],
    )
    assert tried == [{"outcome": "held", "by_agent": True, "held_for": body["reason"]}]

    over_mcp = json.loads(mcp_call(client, writer, "run-raw-sql", {"query": query}))
    assert over_mcp["status"] == "pending_approval", over_mcp
    assert table_notes(owner_sql, three_rows) == KEPT

    request = client.get(f"/api/approvals/{body['changeRequestId']}", headers=admin).json()
    assert request["tool"] == "run-raw-sql" and request["arguments"]["query"] == query
    approve(client, admin, body["changeRequestId"])
    assert table_notes(owner_sql, three_rows) != KEPT  # the approved call ran for real
    assert all(note != "keep" for _, note in table_notes(owner_sql, three_rows))


@pytest.mark.parametrize("sql", WHOLESALE[:2], ids=WHOLESALE_IDS[:2])
def test_an_agents_migration_that_changes_every_row_waits_for_approval(
    client: TestClient,
    admin: dict[str, str],
    writer: dict[str, str],
    three_rows: str,
    owner_sql: OwnerSql,
    sql: str,
) -> None:
    query = sql.format(table=three_rows)
    version = str(10**12 + secrets.randbelow(10**12))
    body = {"version": version, "name": "backfill", "sql": query}
    held = client.post("/api/database/migrations", headers=writer, json=body)
    assert held.status_code == 202, held.text
    assert held.json()["status"] == "pending_approval" and "3 rows" in held.json()["reason"]
    again: dict[str, object] = {**body, "version": str(int(version) + 1)}
    assert "pending_approval" in mcp_call(client, writer, "apply-migration", again)
    assert table_notes(owner_sql, three_rows) == KEPT
    assert not owner_sql("select 1 from system.custom_migrations where version = %s", version)

    approve(client, admin, held.json()["changeRequestId"])
    assert all(note != "keep" for _, note in table_notes(owner_sql, three_rows))
    assert owner_sql("select 1 from system.custom_migrations where version = %s", version)


def test_an_agents_import_that_changes_every_row_is_refused(
    client: TestClient, writer: dict[str, str], three_rows: str, owner_sql: OwnerSql
) -> None:
    """No tool runs an import for an approval to run: it is refused, and the agent sent to migrations."""
    sql = f"UPDATE public.{three_rows} SET note = 'gone' WHERE id > 0;".encode()
    response = client.post(
        "/api/database/advance/import",
        headers=writer,
        files={"file": ("backfill.sql", sql, "application/sql")},
    )
    assert_forbidden(response, "3 rows", "/api/database/migrations")
    assert table_notes(owner_sql, three_rows) == KEPT


def test_an_agents_ordinary_sql_still_runs_at_once(
    client: TestClient, admin: dict[str, str], writer: dict[str, str], three_rows: str, owner_sql: OwnerSql
) -> None:
    """One row of three, some rows, new rows, a backfill of a table's only row, a table filled and emptied
    in the same call: each commits at once."""

    def run(query: str) -> None:
        response = client.post("/api/database/advance/rawsql", headers=writer, json={"query": query})
        assert response.status_code == 200, response.text

    run(f"UPDATE public.{three_rows} SET note = 'seen' WHERE id = 1")
    run(f"DELETE FROM public.{three_rows} WHERE id >= 2")
    run(f"INSERT INTO public.{three_rows} VALUES (4, 'new'), (5, 'new')")
    assert table_notes(owner_sql, three_rows) == [(1, "seen"), (4, "new"), (5, "new")]
    run(f"UPDATE public.{three_rows} SET note = 'twice' WHERE id <= 4; SELECT 1")
    assert table_notes(owner_sql, three_rows) == [(1, "twice"), (4, "twice"), (5, "new")]

    single = admin_table(client, admin, "single", ["old"])
    run(f"UPDATE public.{single} SET note = 'backfilled' WHERE id IS NOT NULL")
    assert table_notes(owner_sql, single) == [(1, "backfilled")]
    scratch = f"scratch_{secrets.token_hex(4)}"
    run(
        f"CREATE TABLE public.{scratch} (id int primary key); "
        f"INSERT INTO public.{scratch} SELECT generate_series(1, 5); "
        f"DELETE FROM public.{scratch} WHERE id > 0"
    )
    assert owner_sql(f"select count(*) as n from public.{scratch}") == [{"n": 0}]
    explained = client.post(
        "/api/database/advance/rawsql",
        headers=writer,
        json={"query": f"SELECT * FROM public.{three_rows}", "explain": True},
    )
    assert explained.status_code == 200, explained.text


def test_a_persons_sql_that_changes_every_row_runs_at_once(
    client: TestClient, admin: dict[str, str], three_rows: str, owner_sql: OwnerSql
) -> None:
    query = f"UPDATE public.{three_rows} SET note = 'all' WHERE id > 0"
    response = client.post("/api/database/advance/rawsql", headers=admin, json={"query": query})
    assert response.status_code == 200, response.text
    assert table_notes(owner_sql, three_rows) == [(1, "all"), (2, "all"), (3, "all")]


OWNER_SQL = "/api/database/advance/rawsql/unrestricted"
#: Posts `{query, ...}` to the owner-level SQL route as an agent key with `database:owner-sql`.
OwnerPost = Callable[..., Any]


@pytest.fixture(scope="module")
def owner_post(client: TestClient, admin: dict[str, str]) -> OwnerPost:
    headers = agent_headers(client, admin, ["database:write", "database:owner-sql"], "root")
    return lambda query, **extra: client.post(OWNER_SQL, headers=headers, json={"query": query, **extra})


@pytest.fixture(params=WHOLESALE, ids=WHOLESALE_IDS)
def wholesale(request: pytest.FixtureRequest, three_rows: str) -> tuple[str, str]:
    """A `three_rows` table and SQL that changes every row of it."""
    return three_rows, str(request.param).format(table=three_rows)


def test_an_agents_owner_sql_that_changes_every_row_waits_for_approval(
    client: TestClient, admin: dict[str, str], owner_post: OwnerPost, owner_sql: OwnerSql, wholesale: Any
) -> None:
    """`database:owner-sql` lets a key run SQL as the owner, not past a person: held as on /advance/rawsql,
    with the same answer, and an approval runs it as the owner."""
    table, query = wholesale
    held = owner_post(query)
    assert held.status_code == 202, held.text
    body = held.json()
    assert body["status"] == "pending_approval"
    assert body["reason"] == f"deletes or updates every row of public.{table} (all 3 rows it held)"
    assert table_notes(owner_sql, table) == KEPT

    listed = client.get("/api/approvals?status=pending&limit=100", headers=admin).json()
    request = next(r for r in listed if r["id"] == body["changeRequestId"])
    assert request["tool"] == "run-owner-sql" and request["arguments"] == {"query": query, "params": []}
    approve(client, admin, body["changeRequestId"])
    assert all(note != "keep" for _, note in table_notes(owner_sql, table))
    entries = owner_sql(
        "select details from system.audit_logs where action = 'EXECUTE_RAW_SQL_UNRESTRICTED' "
        "and details->>'query' = %s and outcome = 'success'",
        query[:300],
    )
    assert [e["details"]["executionRole"] for e in entries] == ["owner"]  # the approved call, once


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("DROP TABLE public.{table}", "DROP TABLE"),
        ("TRUNCATE public.{table}", "TRUNCATE"),
        ("DELETE FROM public.{table}", "DELETE without WHERE"),
    ],
    ids=["drop", "truncate", "delete-without-where"],
)
def test_an_agents_dangerous_owner_sql_waits_before_it_runs(
    client: TestClient,
    admin: dict[str, str],
    owner_post: OwnerPost,
    owner_sql: OwnerSql,
    three_rows: str,
    sql: str,
    reason: str,
) -> None:
    """What run-raw-sql holds by its text (a drop, TRUNCATE, a write without WHERE) the owner-level route
    holds too, before it runs: the scope gives the owner's privileges, not a way around a person."""
    query = sql.format(table=three_rows)
    held = owner_post(query)
    assert held.status_code == 202, held.text
    body = held.json()
    assert body["status"] == "pending_approval" and reason in body["reason"], body
    assert table_notes(owner_sql, three_rows) == KEPT  # the table is there, its rows as they were

    request = client.get(f"/api/approvals/{body['changeRequestId']}", headers=admin).json()
    assert request["tool"] == "run-owner-sql" and request["arguments"] == {"query": query, "params": []}
    approve(client, admin, body["changeRequestId"])
    left = owner_sql("select count(*) as n from pg_catalog.pg_class where relname = %s", three_rows)
    if sql.startswith("DROP"):
        assert left == [{"n": 0}]
    else:
        assert table_notes(owner_sql, three_rows) == []


def test_an_agents_ordinary_owner_sql_still_runs_at_once(
    client: TestClient, admin: dict[str, str], owner_post: OwnerPost, three_rows: str, owner_sql: OwnerSql
) -> None:
    """Some rows of three, a table's only row, reads and explains: each answers 200 at once, as the owner."""

    def run(query: str, **extra: object) -> dict[str, Any]:
        response = owner_post(query, **extra)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    run(f"UPDATE public.{three_rows} SET note = 'seen' WHERE id <= 2")
    run(f"DELETE FROM public.{three_rows} WHERE id = 1")
    assert table_notes(owner_sql, three_rows) == [(2, "seen"), (3, "keep")]
    single = admin_table(client, admin, "single", ["old"])
    run(f"UPDATE public.{single} SET note = 'backfilled' WHERE id IS NOT NULL")
    assert table_notes(owner_sql, single) == [(1, "backfilled")]
    assert run("select current_user <> 'project_admin' as owner")["rows"] == [{"owner": True}]
    assert run(f"SELECT * FROM public.{three_rows}", explain=True)["rowCount"] == 1


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM schedules.jobs WHERE id = '{id}'",
        "UPDATE schedules.jobs SET function_url = 'https://elsewhere.example/' WHERE id = '{id}'",
    ],
    ids=["delete", "update"],
)
def test_an_agents_owner_sql_on_a_schedule_waits_as_its_tool_does(
    client: TestClient, admin: dict[str, str], owner_post: OwnerPost, owner_sql: OwnerSql, sql: str
) -> None:
    """Schedules are Kilnbase's own rows, with tools of their own (`delete-schedule` waits for a person):
    owner-level SQL that deletes or changes one waits too, as it does for a user or a file."""
    created = client.post(
        "/api/schedules",
        headers=admin,
        json={
            "name": f"kept-{secrets.token_hex(3)}",
            "cronSchedule": "0 0 1 1 *",
            "functionUrl": "https://example.com/hook",
            "httpMethod": "POST",
        },
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    held = owner_post(sql.format(id=job_id))
    assert held.status_code == 202, held.text
    assert "schedules.jobs" in held.json()["reason"], held.json()
    kept = owner_sql("select function_url from schedules.jobs where id = %s", job_id)
    assert kept == [{"function_url": "https://example.com/hook"}]
    client.delete(f"/api/schedules/{job_id}", headers=admin)


def test_an_agents_owner_sql_on_a_function_waits(
    client: TestClient, admin: dict[str, str], owner_post: OwnerPost, owner_sql: OwnerSql
) -> None:
    """A function's code is Kilnbase's own row too: writing it by SQL would pass the rule that an agent
    without secrets:read deploys only functions that see no secret, so owner-level SQL that changes it
    waits for a person."""
    slug = f"kept-{secrets.token_hex(3)}"
    created = client.post(
        "/api/functions",
        headers=admin,
        json={"name": slug, "slug": slug, "code": "export default () => new Response('kept');"},
    )
    assert created.status_code == 201, created.text
    query = (
        "UPDATE functions.definitions SET code = 'export default () => new Response(1);' "
        f"WHERE slug = '{slug}'"
    )
    held = owner_post(query)
    assert held.status_code == 202, held.text
    assert "functions.definitions" in held.json()["reason"], held.json()
    kept = owner_sql("select code from functions.definitions where slug = %s", slug)
    assert kept == [{"code": "export default () => new Response('kept');"}]
    client.delete(f"/api/functions/{slug}", headers=admin)


def test_owner_sql_by_a_person_is_not_held_and_its_tool_is_not_on_mcp(
    client: TestClient, admin: dict[str, str], writer: dict[str, str], three_rows: str, owner_sql: OwnerSql
) -> None:
    """The API key's owner SQL that changes every row commits at once; `run-owner-sql` exists only for an
    approval to run, so no MCP client can call it (owner-level SQL stays off the MCP server)."""
    query = f"UPDATE public.{three_rows} SET note = 'all' WHERE id > 0"
    response = client.post(OWNER_SQL, headers=admin, json={"query": query})
    assert response.status_code == 200, response.text
    assert table_notes(owner_sql, three_rows) == [(1, "all"), (2, "all"), (3, "all")]
    for caller in (admin, writer):
        assert "Unknown tool: run-owner-sql" in mcp_call(client, caller, "run-owner-sql", {"query": query})


@pytest.fixture(scope="module")
def record_writer(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    return agent_headers(client, admin, ["records:write"], "upserter")


def test_an_agents_upsert_that_updates_every_row_is_refused(
    client: TestClient,
    admin: dict[str, str],
    record_writer: dict[str, str],
    three_rows: str,
    owner_sql: OwnerSql,
) -> None:
    """`Prefer: resolution=merge-duplicates` makes a POST a PATCH of the rows it names: one that updates every
    row of a table of two or more is refused as the PATCH is, new rows beside it or not."""
    records = f"/api/database/records/{three_rows}"
    merge = {**record_writer, "Prefer": "resolution=merge-duplicates"}
    every = [{"id": n, "note": "gone"} for n in (1, 2, 3)]
    for rows in (every, [*every, {"id": 4, "note": "new"}]):
        refused = client.post(records, headers=merge, json=rows)
        assert_forbidden(refused, "updated all 3 rows", "run-raw-sql")
        assert table_notes(owner_sql, three_rows) == KEPT

    some = client.post(records, headers=merge, json=[*every[:2], {"id": 4, "note": "new"}])
    assert some.status_code == 201, some.text
    assert table_notes(owner_sql, three_rows) == [(1, "gone"), (2, "gone"), (3, "keep"), (4, "new")]
    person = client.post(records, headers={**admin, "Prefer": "resolution=merge-duplicates"}, json=every)
    assert person.status_code == 200, person.text

    single = admin_table(client, admin, "single", ["old"])
    only = client.post(f"/api/database/records/{single}", headers=merge, json=[{"id": 1, "note": "new"}])
    assert only.status_code == 200, only.text  # a table's only row


#: (query, Prefer, body as CSV): a bulk upsert of every row, in the forms the records API takes.
Bulk = tuple[str, str, bool]
BULK: list[Bulk] = [
    ("?on_conflict=id", "resolution=merge-duplicates", False),
    ("?on_conflict=id&columns=id,note", "resolution=merge-duplicates,return=representation", False),
    ("?columns=note,id", "resolution=merge-duplicates,return=minimal", False),
    ("?on_conflict=id", "resolution=merge-duplicates,return=headers-only", False),
    ("?on_conflict=id&columns=id,note", "resolution=merge-duplicates", True),
]


@pytest.mark.parametrize("bulk", BULK, ids=["on-conflict", "columns", "minimal", "headers-only", "csv"])
def test_an_agents_bulk_upsert_of_every_row_is_refused_in_every_form(
    client: TestClient, record_writer: dict[str, str], three_rows: str, owner_sql: OwnerSql, bulk: Bulk
) -> None:
    """The single-upsert check covers an array body however it is named (`on_conflict=`, `columns=`), sent
    (JSON or CSV) or answered (`return=`): one guard, on every upsert that merges."""
    query, prefer, csv = bulk
    url, headers = f"/api/database/records/{three_rows}{query}", {**record_writer, "Prefer": prefer}
    if csv:
        rows = "id,note\n1,gone\n2,gone\n3,gone\n"
        refused = client.post(url, headers={**headers, "Content-Type": "text/csv"}, content=rows)
    else:
        refused = client.post(url, headers=headers, json=[{"id": n, "note": "gone"} for n in (1, 2, 3)])
    assert_forbidden(refused, "updated all 3 rows", "run-raw-sql")
    assert table_notes(owner_sql, three_rows) == KEPT


BULK_UPSERT = "/api/database/advance/bulk-upsert"
#: Rows as the bulk upsert takes them: (format, content). `EVERY` rewrites each row of a `three_rows` table.
Upload = tuple[str, str]
EVERY: Upload = ("json", json.dumps([{"id": n, "note": "gone"} for n in (1, 2, 3)]))
EVERY_AND_NEW: Upload = ("json", json.dumps([{"id": n, "note": "gone"} for n in (1, 2, 3, 4)]))
EVERY_AS_CSV: Upload = ("csv", "id,note\n1,gone\n2,gone\n3,gone\n")


def upload(
    client: TestClient, headers: dict[str, str], table: str, rows: Upload, upsert_key: str | None = "id"
) -> Any:
    """`POST /advance/bulk-upsert` of `rows` as a file, by `upsert_key` (None: insert them)."""
    fmt, content = rows
    form = {"table": table} if upsert_key is None else {"table": table, "upsertKey": upsert_key}
    files = {"file": (f"rows.{fmt}", content.encode(), f"text/{fmt}")}
    return client.post(BULK_UPSERT, headers=headers, data=form, files=files)


def tool_upsert(
    client: TestClient, headers: dict[str, str], table: str, rows: Upload, upsert_key: str | None = "id"
) -> dict[str, Any]:
    """The `bulk-upsert` tool's call over `/mcp`: its answer as JSON."""
    fmt, content = rows
    arguments: dict[str, object] = {"table": table, "content": content, "format": fmt}
    if upsert_key is not None:
        arguments["upsertKey"] = upsert_key
    answer: dict[str, Any] = json.loads(mcp_call(client, headers, "bulk-upsert", arguments))
    return answer


@pytest.mark.parametrize("rows", [EVERY, EVERY_AND_NEW, EVERY_AS_CSV], ids=["json", "and-new", "csv"])
def test_an_agents_bulk_upload_that_updates_every_row_is_refused(
    client: TestClient, writer: dict[str, str], three_rows: str, owner_sql: OwnerSql, rows: Upload
) -> None:
    """No approval holds a multipart upload: rolled back and refused, and the agent sent to the tool that
    waits for a person (or to send only the rows to change)."""
    refused = upload(client, writer, three_rows, rows)
    assert_forbidden(
        refused, f"every row of public.{three_rows} (all 3 rows it held)", "bulk-upsert MCP tool"
    )
    message = refused.json()["message"]
    assert message.startswith("An agent key may not update every row of a table by bulk upsert")
    assert message.endswith("so nothing was changed.")
    assert "Send only the rows to change" in refused.json()["nextActions"]
    assert table_notes(owner_sql, three_rows) == KEPT
    outcomes = owner_sql(
        "select outcome from system.audit_logs where action = 'BULK_UPSERT' and details->>'table' = %s",
        three_rows,
    )
    assert outcomes == [{"outcome": "refused"}]


def test_an_agents_bulk_upsert_tool_that_updates_every_row_waits_for_approval(
    client: TestClient, admin: dict[str, str], writer: dict[str, str], three_rows: str, owner_sql: OwnerSql
) -> None:
    """The tool takes its rows inline, so its call is held as it was made, listed, and run once approved."""
    held = tool_upsert(client, writer, three_rows, EVERY)
    assert held["status"] == "pending_approval", held
    assert held["reason"] == f"deletes or updates every row of public.{three_rows} (all 3 rows it held)"
    assert table_notes(owner_sql, three_rows) == KEPT

    # Listed by the size and hash of its rows (up to 10 MB each, 200 to a list); in full by its id.
    listed = client.get("/api/approvals?status=pending&limit=100", headers=admin).json()
    request = next(r for r in listed if r["id"] == held["changeRequestId"])
    assert request["tool"] == "bulk-upsert"
    assert request["arguments"] == {"table": three_rows, "format": "json", "upsertKey": "id"}
    rows = EVERY[1].encode()
    summary = {"argument": "content", "bytes": len(rows), "sha256": hashlib.sha256(rows).hexdigest()}
    assert request["file"] == summary
    in_full = client.get(f"/api/approvals/{held['changeRequestId']}", headers=admin).json()
    assert in_full["arguments"] == {
        "table": three_rows,
        "content": EVERY[1],
        "format": "json",
        "upsertKey": "id",
    }
    assert in_full["file"] == summary
    decided = approve(client, admin, held["changeRequestId"])
    assert "Successfully upserted 3 rows" in json.dumps(decided["result"]), decided
    assert table_notes(owner_sql, three_rows) == [(1, "gone"), (2, "gone"), (3, "gone")]
    runs = owner_sql(
        "select outcome from system.audit_logs where action = 'BULK_UPSERT' and details->>'table' = %s "
        "order by created_at, id",
        three_rows,
    )
    assert runs == [{"outcome": "held"}, {"outcome": "success"}]  # the attempt, then the approved call once


def test_an_agents_ordinary_bulk_upserts_run_at_once(
    client: TestClient, admin: dict[str, str], writer: dict[str, str], three_rows: str, owner_sql: OwnerSql
) -> None:
    """Some rows of three (new ones beside them), new rows only, a table's only row: by upload and by the
    tool, each commits at once."""
    some: Upload = (
        "json",
        json.dumps([{"id": 1, "note": "seen"}, {"id": 2, "note": "seen"}, {"id": 4, "note": "new"}]),
    )
    answered = upload(client, writer, three_rows, some)
    assert answered.status_code == 200, answered.text
    assert answered.json()["rowsAffected"] == 3
    assert table_notes(owner_sql, three_rows) == [(1, "seen"), (2, "seen"), (3, "keep"), (4, "new")]
    fresh: Upload = ("csv", "id,note\n5,new\n6,new\n")
    assert upload(client, writer, three_rows, fresh, upsert_key=None).status_code == 200
    by_tool: Upload = ("json", json.dumps([{"id": n, "note": "tool"} for n in (3, 4, 7)]))
    assert tool_upsert(client, writer, three_rows, by_tool)["rowsAffected"] == 3
    assert table_notes(owner_sql, three_rows) == [
        (1, "seen"), (2, "seen"), (3, "tool"), (4, "tool"), (5, "new"), (6, "new"), (7, "tool")
    ]  # fmt: skip

    single = admin_table(client, admin, "single", ["old"])
    only: Upload = ("json", json.dumps([{"id": 1, "note": "backfilled"}]))
    assert upload(client, writer, single, only).status_code == 200
    assert tool_upsert(client, writer, single, only)["rowsAffected"] == 1
    assert table_notes(owner_sql, single) == [(1, "backfilled")]


def test_a_persons_bulk_upsert_of_every_row_runs_at_once(
    client: TestClient, admin: dict[str, str], three_rows: str, owner_sql: OwnerSql
) -> None:
    """The API key's upload and tool call that rewrite every row commit at once."""
    answered = upload(client, admin, three_rows, EVERY)
    assert answered.status_code == 200, answered.text
    assert table_notes(owner_sql, three_rows) == [(1, "gone"), (2, "gone"), (3, "gone")]
    again: Upload = ("json", json.dumps([{"id": n, "note": "again"} for n in (1, 2, 3)]))
    assert tool_upsert(client, admin, three_rows, again)["rowsAffected"] == 3
    assert table_notes(owner_sql, three_rows) == [(1, "again"), (2, "again"), (3, "again")]
