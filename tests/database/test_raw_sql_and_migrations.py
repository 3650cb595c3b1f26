"""Raw SQL (guarded, as project_admin; unrestricted as the owner, audited) and the custom migrations API."""

from __future__ import annotations

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.database.migration_risk import assess
from kilnbase.database.sql_guard import GuardRefusal, check

RAW = "/api/database/advance/rawsql"


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
        "select 1",
        "create table t (id int); insert into t values (1)",
        "select auth.role(), set_config('app.setting', 'x', true)",
        "create policy p on t for select using (auth.uid() is not null)",
        "set work_mem = '64MB'",
    ],
)
def test_guard_allows_ordinary_sql(query: str) -> None:
    assert check(query)


@pytest.mark.parametrize(
    ("query", "level"),
    [
        ("create table a (id int)", "SAFE"),
        ("create index concurrently on a (id)", "SAFE"),
        ("alter table a add column b int", "SAFE"),
        ("create index on a (id)", "WARNING"),
        ("alter table a rename to b", "WARNING"),
        ("alter table a alter column id type bigint", "WARNING"),
        ("update a set id = 1 where id = 2", "WARNING"),
        ("alter table a add column c int not null", "WARNING"),
        ("drop table a", "DANGER"),
        ("truncate a", "DANGER"),
        ("delete from a", "DANGER"),
        ("alter table a drop column b", "DANGER"),
        ("alter table a disable row level security", "DANGER"),
    ],
)
def test_risk_levels(query: str, level: str) -> None:
    assert assess(check(query)).level == level


def test_rawsql_runs_as_project_admin(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        RAW, json={"query": "select current_user as who, $1::int + 1 as n", "params": [41]}, headers=admin
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rows"] == [{"who": "project_admin", "n": 42}]
    assert body["rowCount"] == 1
    assert [f["name"] for f in body["fields"]] == ["who", "n"]
    assert body["fields"][1]["dataTypeID"] == 23


def test_rawsql_ddl_is_visible_to_records_at_once(client: TestClient, admin: dict[str, str]) -> None:
    script = (
        "create table gadgets (id serial primary key, name text); "
        "insert into gadgets (name) values ('a'), ('b')"
    )
    response = client.post(RAW, json={"query": script}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["rowCount"] == 2
    rows = client.get("/api/database/records/gadgets?select=name&order=id", headers=admin).json()
    assert rows == [{"name": "a"}, {"name": "b"}]


def test_rawsql_refusals_and_errors(client: TestClient, admin: dict[str, str], user: dict[str, str]) -> None:
    refused = client.post(RAW, json={"query": "reset role; select 1"}, headers=admin)
    assert refused.status_code == 403
    assert refused.json()["error"] == "DATABASE_FORBIDDEN"
    owner_only = client.post(RAW, json={"query": "select * from system.audit_logs"}, headers=admin)
    assert owner_only.status_code == 403
    assert owner_only.json()["error"] == "DATABASE_PERMISSION_DENIED"
    bad = client.post(RAW, json={"query": "select * from no_such_table"}, headers=admin)
    assert bad.status_code == 404
    assert client.post(RAW, json={"query": "select 1"}, headers=user).status_code == 403
    assert client.post(RAW, json={}, headers=admin).status_code == 400
    assert (
        client.post(RAW, json={"query": "select 1; select 2", "params": [1]}, headers=admin).status_code
        == 400
    )
    timeout = client.post(RAW, json={"query": "select pg_sleep(0.01), 1 as done"}, headers=admin)
    assert timeout.status_code == 200


def test_explain_is_select_only_and_rolled_back(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(RAW, json={"query": "select * from gadgets", "explain": True}, headers=admin)
    assert response.status_code == 200, response.text
    plan = response.json()["rows"][0]["QUERY PLAN"]
    assert plan[0]["Plan"]["Node Type"]
    refused = client.post(RAW, json={"query": "delete from gadgets", "explain": True}, headers=admin)
    assert refused.status_code == 400


def test_unrestricted_runs_as_owner_and_is_audited(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    response = client.post(
        f"{RAW}/unrestricted",
        json={"query": "create table owned_by_root (id int); select count(*) as n from system.audit_logs"},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    with psycopg.connect(database_url) as conn:
        owner = conn.execute("select tableowner from pg_tables where tablename = 'owned_by_root'").fetchone()
        actions = [r[0] for r in conn.execute("select action from system.audit_logs order by created_at")]
    assert owner == ("project_admin",)
    assert "EXECUTE_RAW_SQL_UNRESTRICTED" in actions
    assert "EXECUTE_RAW_SQL" in actions


def test_migrations_dry_run(client: TestClient, admin: dict[str, str]) -> None:
    dry = client.post(
        "/api/database/migrations/dry-run",
        json={"sql": "create table m1 (id int); drop table gadgets"},
        headers=admin,
    ).json()
    assert dry["valid"] is True
    assert dry["statementCount"] == 2
    assert dry["statements"] == ["create table m1 (id int)", "drop table gadgets"]
    assert dry["riskLevel"] == "DANGER"
    assert any("DROP TABLE" in f for f in dry["riskFactors"])
    invalid = client.post(
        "/api/database/migrations/dry-run", json={"sql": "creat tabel"}, headers=admin
    ).json()
    assert invalid["valid"] is False
    assert "m1" not in client.get("/api/database/tables", headers=admin).json()


def test_migrations_apply_and_list(client: TestClient, admin: dict[str, str]) -> None:
    body = {
        "version": "20261122000001",
        "name": "add-widgets",
        "sql": "create table widgets (id int primary key); insert into widgets values (1)",
    }
    created = client.post("/api/database/migrations", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["statements"] == [
        "create table widgets (id int primary key)",
        "insert into widgets values (1)",
    ]
    assert client.get("/api/database/records/widgets", headers=admin).json() == [{"id": 1}]
    again = client.post("/api/database/migrations", json=body, headers=admin)
    assert again.status_code == 409
    listed = client.get("/api/database/migrations", headers=admin).json()["migrations"]
    assert [m["version"] for m in listed] == ["20261122000001"]


@pytest.mark.parametrize(
    "body",
    [
        {"version": "x1", "name": "ok", "sql": "select 1"},
        {"version": "2", "name": "Not Kebab", "sql": "select 1"},
        {"version": "3", "name": "guarded", "sql": "set role postgres"},
        {"version": "4", "name": "system", "sql": "create table system.sneaky (id int)"},
        {"version": "5", "name": "failing", "sql": "create table fails (id int); select * from nowhere"},
    ],
)
def test_migration_errors_apply_nothing(
    client: TestClient, admin: dict[str, str], body: dict[str, str]
) -> None:
    response = client.post("/api/database/migrations", json=body, headers=admin)
    assert 400 <= response.status_code < 500, response.text
    assert "fails" not in client.get("/api/database/tables", headers=admin).json()
