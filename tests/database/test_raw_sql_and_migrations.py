"""Raw SQL (guarded, as project_admin; unrestricted as the owner, audited) and the custom migrations API.

Each test creates the tables and migrations it reads, under names and versions of its own, so the tests hold
in any order. Shapes follow InsForge's `/advance/rawsql` and `/migrations` contract."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from starlette.testclient import TestClient

from kilnbase.database.migration_risk import assess
from kilnbase.database.sql_guard import GuardRefusal, check
from tests.database.conftest import NewName

RAW = "/api/database/advance/rawsql"
MIGRATIONS = "/api/database/migrations"


@pytest.mark.parametrize(
    "query",
    [
        "reset role",
        "set role postgres",
        "set session authorization default",
        "reset all",
        "set local search_path to pg_temp",
        "set statement_timeout = 0",
        "begin",
        "commit",
        "create database other",
        "create role sneaky login",
        "alter system set fsync = off",
        "select set_config('role', 'none', true)",
        "select pg_catalog.set_config('search_path', 'evil', false)",
        "do $$ begin reset role; end $$",
        "create function f() returns void language plpgsql as $$ begin execute 'set role x'; end $$",
        "selec 1",
        "",
    ],
)
def test_guard_refuses(query: str) -> None:
    with pytest.raises(GuardRefusal):
        check(query)


@pytest.mark.parametrize(
    "query",
    [
        "do $$ begin set statement_timeout = 0; end $$",
        "do $$ begin perform set_config('statement_timeout', '0', false); end $$",
    ],
)
def test_guard_refuses_timeout_changes_in_code_bodies(query: str) -> None:
    with pytest.raises(GuardRefusal):
        check(query)


@pytest.mark.parametrize(
    ("query", "statements"),
    [
        ("select 1", 1),
        ("create table t (id int); insert into t values (1)", 2),
        ("select auth.role(), set_config('app.setting', 'x', true)", 1),
        ("create policy p on t for select using (auth.uid() is not null)", 1),
        ("set work_mem = '64MB'", 1),
        ("do $$ begin execute 'drop table t'; end $$", 1),
    ],
)
def test_guard_allows_ordinary_sql(query: str, statements: int) -> None:
    assert len(check(query)) == statements


@pytest.mark.parametrize(
    ("query", "level"),
    [
        ("create table a (id int)", "SAFE"),
        ("create index concurrently on a (id)", "SAFE"),
        ("alter table a add column b int", "SAFE"),
        ("create function f() returns int language plpgsql as $$ begin return 1; end $$", "SAFE"),
        ("create index on a (id)", "WARNING"),
        ("alter table a rename to b", "WARNING"),
        ("alter table a alter column id type bigint", "WARNING"),
        ("update a set id = 1 where id = 2", "WARNING"),
        ("alter table a add column c int not null", "WARNING"),
        ("do $$ begin perform 1; end $$", "WARNING"),
        ("create function f() returns int language sql security definer as $$ select 1 $$", "WARNING"),
        ("drop table a", "DANGER"),
        ("truncate a", "DANGER"),
        ("delete from a", "DANGER"),
        ("alter table a drop column b", "DANGER"),
        ("alter table a disable row level security", "DANGER"),
        ("do $$ begin execute 'drop table a'; end $$", "DANGER"),
        (
            "create function f() returns void language plpgsql as $$ begin execute 'truncate a'; end $$",
            "DANGER",
        ),
    ],
)
def test_risk_levels(query: str, level: str) -> None:
    assert assess(check(query)).level == level


def rawsql(client: TestClient, admin: dict[str, str], query: str, **extra: Any) -> Any:
    response = client.post(RAW, json={"query": query, **extra}, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()


def test_rawsql_runs_as_project_admin(client: TestClient, admin: dict[str, str]) -> None:
    body = rawsql(
        client,
        admin,
        "select current_user as who, session_user as login, $1::int + 1 as n",
        params=[41],
    )
    # Logged in as the NOINHERIT authenticator, acting as project_admin.
    assert body["rows"] == [{"who": "project_admin", "login": "kilnbase_authenticator", "n": 42}]
    assert body["rowCount"] == 1
    assert [f["name"] for f in body["fields"]] == ["who", "login", "n"]
    assert body["fields"][2]["dataTypeID"] == 23


def test_rawsql_takes_an_object_param_as_json_as_insforge_does(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    """node-postgres (InsForge's driver) sends an object parameter as its JSON text."""
    table = new_name("docs")
    rawsql(client, admin, f"create table {table} (id int, body jsonb, tags text[])")
    written = rawsql(
        client,
        admin,
        f"insert into {table} values ($1, $2, $3) returning body->>'title' as title, body",
        params=[1, {"title": "Hi", "n": [1, 2]}, ["a", "b"]],
    )
    assert written["rows"] == [{"title": "Hi", "body": {"title": "Hi", "n": [1, 2]}}]
    read = rawsql(client, admin, "select $1::jsonb -> 'k' as k", params=[{"k": {"deep": None}}])
    assert read["rows"] == [{"k": {"deep": None}}]


def test_rawsql_ddl_is_visible_to_records_at_once(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    gadgets = new_name("gadgets")
    script = (
        f"create table {gadgets} (id serial primary key, name text); "
        f"insert into {gadgets} (name) values ('a'), ('b')"
    )
    assert rawsql(client, admin, script)["rowCount"] == 2  # the last statement's
    rows = client.get(f"/api/database/records/{gadgets}?select=name&order=id", headers=admin).json()
    assert rows == [{"name": "a"}, {"name": "b"}]
    owner = rawsql(client, admin, "select tableowner from pg_tables where tablename = $1", params=[gadgets])
    assert owner["rows"] == [{"tableowner": "project_admin"}]


def test_rawsql_refusals_and_errors(
    client: TestClient, admin: dict[str, str], user: dict[str, str], new_name: NewName
) -> None:
    refused = client.post(RAW, json={"query": "reset role; select 1"}, headers=admin)
    assert refused.status_code == 403
    assert refused.json()["error"] == "DATABASE_FORBIDDEN"
    owner_only = client.post(RAW, json={"query": "select * from system.audit_logs"}, headers=admin)
    assert owner_only.status_code == 403
    assert owner_only.json()["error"] == "DATABASE_PERMISSION_DENIED"
    bad = client.post(RAW, json={"query": f"select * from {new_name('no_such_table')}"}, headers=admin)
    assert bad.status_code == 404
    assert bad.json()["error"] == "DATABASE_NOT_FOUND"
    assert client.post(RAW, json={"query": "select 1"}, headers=user).status_code == 403
    missing = client.post(RAW, json={}, headers=admin)
    assert missing.status_code == 400
    assert missing.json()["error"] == "MISSING_FIELD"
    mixed = client.post(RAW, json={"query": "select 1; select 2", "params": [1]}, headers=admin)
    assert mixed.status_code == 400
    assert mixed.json()["error"] == "INVALID_INPUT"
    # A short statement is well within the admin's statement timeout (30 s by default).
    assert rawsql(client, admin, "select pg_sleep(0.01), 1 as done")["rows"][0]["done"] == 1


def test_rawsql_failure_rolls_back_the_whole_script(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    table = new_name("half")
    failed = client.post(RAW, json={"query": f"create table {table} (id int); select 1 / 0"}, headers=admin)
    assert failed.status_code == 400
    assert failed.json()["error"] == "DATABASE_VALIDATION_ERROR"
    assert client.get(f"/api/database/tables/{table}/schema", headers=admin).status_code == 404


def test_explain_is_select_only_and_rolled_back(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    gadgets = new_name("gadgets")
    rawsql(client, admin, f"create table {gadgets} (id int); insert into {gadgets} values (1)")
    response = client.post(RAW, json={"query": f"select * from {gadgets}", "explain": True}, headers=admin)
    assert response.status_code == 200, response.text
    plan = response.json()["rows"][0]["QUERY PLAN"]
    assert plan[0]["Plan"]["Node Type"] == "Seq Scan"
    assert plan[0]["Plan"]["Actual Rows"] == 1  # ANALYZE ran it
    refused = client.post(RAW, json={"query": f"delete from {gadgets}", "explain": True}, headers=admin)
    assert refused.status_code == 400
    assert refused.json()["error"] == "INVALID_INPUT"
    assert rawsql(client, admin, f"select count(*)::int as n from {gadgets}")["rows"] == [{"n": 1}]


def audit_entries(client: TestClient, admin: dict[str, str], action: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/logs/audits?action={action}&limit=1000", headers=admin)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


def test_unrestricted_runs_as_owner_and_is_audited(
    client: TestClient, admin: dict[str, str], database_url: str, new_name: NewName
) -> None:
    owned = new_name("owned_by_root")
    script = (
        f"create table {owned} (id int); select current_user as who, count(*) as n from system.audit_logs"
    )
    response = client.post(f"{RAW}/unrestricted", json={"query": script}, headers=admin)
    assert response.status_code == 200, response.text
    owner_login = conninfo_to_dict(database_url)["user"]
    assert response.json()["rows"][0]["who"] == owner_login  # owner-level: system tables are readable
    guarded = f"select count(*) as n from pg_tables where tablename = '{owned}'"
    assert rawsql(client, admin, guarded)["rows"] == [{"n": 1}]
    with psycopg.connect(database_url) as conn:
        owner = conn.execute("select tableowner from pg_tables where tablename = %s", (owned,)).fetchone()
    assert owner == ("project_admin",)  # reassigned after the script, so project_admin can keep using it
    unrestricted = [
        e
        for e in audit_entries(client, admin, "EXECUTE_RAW_SQL_UNRESTRICTED")
        if owned in e["details"]["query"]
    ]
    assert [(e["actor"], e["module"], e["outcome"], e["details"]["executionRole"]) for e in unrestricted] == [
        ("api-key", "DATABASE", "success", "owner")
    ]
    restricted = [
        e for e in audit_entries(client, admin, "EXECUTE_RAW_SQL") if e["details"]["query"] == guarded
    ]
    assert [(e["outcome"], e["details"]["executionRole"]) for e in restricted] == [
        ("success", "project_admin")
    ]


def test_migrations_dry_run(client: TestClient, admin: dict[str, str], new_name: NewName) -> None:
    created, dropped = new_name("m1"), new_name("gadgets")
    sql = f"create table {created} (id int); drop table {dropped}"
    dry = client.post(f"{MIGRATIONS}/dry-run", json={"sql": sql}, headers=admin)
    assert dry.status_code == 200, dry.text
    body = dry.json()
    assert body["valid"] is True
    assert body["statementCount"] == 2
    assert body["statements"] == [f"create table {created} (id int)", f"drop table {dropped}"]
    assert body["riskLevel"] == "DANGER"
    assert [f for f in body["riskFactors"] if "DROP TABLE" in f] == [
        "DANGER: DROP TABLE removes it and its data"
    ]
    invalid = client.post(f"{MIGRATIONS}/dry-run", json={"sql": "creat tabel"}, headers=admin).json()
    assert invalid["valid"] is False
    assert invalid["statementCount"] == 0
    assert created not in client.get("/api/database/tables", headers=admin).json()
    missing = client.post(f"{MIGRATIONS}/dry-run", json={}, headers=admin)
    assert missing.status_code == 400
    assert missing.json()["error"] == "MISSING_FIELD"


@pytest.mark.parametrize(
    ("sql", "level", "factor"),
    [
        ("do $$ begin perform 1; end $$", "WARNING", "a DO block runs procedural code"),
        ("do $$ begin execute 'drop table ' || 'x'; end $$", "DANGER", "a DO block runs dynamic SQL"),
        (
            "create function f() returns void language plpgsql as $$ begin execute 'truncate x'; end $$",
            "DANGER",
            "the function body runs dynamic SQL",
        ),
    ],
)
def test_dry_run_rates_code_bodies(
    client: TestClient, admin: dict[str, str], sql: str, level: str, factor: str
) -> None:
    body = client.post(f"{MIGRATIONS}/dry-run", json={"sql": sql}, headers=admin).json()
    assert (body["valid"], body["riskLevel"]) == (True, level)
    assert [f for f in body["riskFactors"] if factor in f] != []


def test_migrations_apply_and_list(
    client: TestClient, admin: dict[str, str], new_name: NewName, new_version: Callable[[], str]
) -> None:
    widgets = new_name("widgets")
    first, second = new_version(), new_version()
    body = {
        "version": first,
        "name": "add-widgets",
        "sql": f"create table {widgets} (id int primary key); insert into {widgets} values (1)",
    }
    created = client.post(MIGRATIONS, json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == first
    assert created.json()["name"] == "add-widgets"
    assert created.json()["statements"] == [
        f"create table {widgets} (id int primary key)",
        f"insert into {widgets} values (1)",
    ]
    assert client.get(f"/api/database/records/{widgets}", headers=admin).json() == [{"id": 1}]
    again = client.post(MIGRATIONS, json={**body, "sql": "select 1"}, headers=admin)
    assert again.status_code == 409
    assert again.json()["error"] == "ALREADY_EXISTS"
    then = {"version": second, "name": "more-widgets", "sql": f"insert into {widgets} values (2)"}
    assert client.post(MIGRATIONS, json=then, headers=admin).status_code == 201
    listed = client.get(MIGRATIONS, headers=admin).json()["migrations"]
    mine = [m for m in listed if m["version"] in (first, second)]
    assert [(m["version"], m["name"], m["statements"]) for m in mine] == [
        (second, "more-widgets", [f"insert into {widgets} values (2)"]),  # newest first
        (first, "add-widgets", created.json()["statements"]),
    ]
    assert all(datetime.fromisoformat(m["createdAt"]).tzinfo is not None for m in mine)


@pytest.mark.parametrize(
    ("version", "name", "sql", "status", "code"),
    [
        ("x1", "ok", "create table {table} (id int)", 400, "INVALID_INPUT"),
        ("{version}", "Not Kebab", "create table {table} (id int)", 400, "INVALID_INPUT"),
        (
            "{version}",
            "guarded",
            "create table {table} (id int); set role postgres",
            400,
            "DATABASE_FORBIDDEN",
        ),
        (
            "{version}",
            "system",
            "create table {table} (id int); create table system.sneaky (id int)",
            400,
            "DATABASE_FORBIDDEN",
        ),
        (
            "{version}",
            "failing",
            "create table {table} (id int); select * from nowhere",
            404,
            "DATABASE_NOT_FOUND",
        ),
        ("{version}", "no-sql", "", 400, "MISSING_FIELD"),
    ],
)
def test_migration_errors_apply_nothing(
    client: TestClient,
    admin: dict[str, str],
    new_name: NewName,
    new_version: Callable[[], str],
    version: str,
    name: str,
    sql: str,
    status: int,
    code: str,
) -> None:
    table, number = new_name("fails"), new_version()
    body = {"version": version.format(version=number), "name": name, "sql": sql.format(table=table)}
    response = client.post(MIGRATIONS, json=body, headers=admin)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert table not in client.get("/api/database/tables", headers=admin).json()
    listed = client.get(MIGRATIONS, headers=admin).json()["migrations"]
    assert body["version"] not in [m["version"] for m in listed]
