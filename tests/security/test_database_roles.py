"""Least privilege at the database: requests log in as the authenticator, which can only become anon,
authenticated or project_admin, so SQL that steps out of its role finds no privileges at all.

Each attack here worked when requests logged in as the superuser (a `RESET ROLE` gave superuser).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.security.conftest import OwnerSql

RAW_SQL = "/api/database/advance/rawsql"
VICTIM = "victim@example.com"
VICTIM_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0$not-a-real-hash"


@pytest.fixture(scope="module", autouse=True)
def app_with_dynamic_sql(owner_sql: OwnerSql) -> None:
    """An app that stores a user, and an app function with the common dynamic-SQL mistake, open to anon."""
    owner_sql(
        "insert into auth.users (email, password) values (%s, %s) on conflict do nothing", VICTIM, VICTIM_HASH
    )
    owner_sql(
        """
        create function public.lookup(expr text) returns text language plpgsql as $$
        declare result text;
        begin
            execute 'select (' || expr || ')::text' into result;  -- the mistake: text spliced into SQL
            return result;
        end $$;
        grant execute on function public.lookup(text) to anon;
        """
    )


def event_trigger_enabled(owner_sql: OwnerSql) -> bool:
    rows = owner_sql("select evtenabled from pg_event_trigger where evtname = 'kilnbase_secure_new_tables'")
    return rows == [{"evtenabled": "O"}]


def test_requests_log_in_as_the_authenticator_not_the_owner(client: TestClient, anon: dict[str, str]) -> None:
    expr = (
        "current_user || ',' || session_user || ',' "
        "|| (select rolsuper from pg_roles where rolname = session_user)"
    )
    response = client.get("/api/database/rpc/lookup", params={"expr": expr}, headers=anon)
    assert response.status_code == 200, response.text
    assert response.json() == "anon,kilnbase_authenticator,false"


def test_anon_injection_that_resets_the_role_reads_nothing(client: TestClient, anon: dict[str, str]) -> None:
    # `set_config('role', 'none')` returns to the login role: the superuser before, the authenticator now.
    stepping_out = "set_config('role', 'none', true) || current_user"
    response = client.get("/api/database/rpc/lookup", params={"expr": stepping_out}, headers=anon)
    assert response.status_code == 200 and response.json() == "nonekilnbase_authenticator"
    steal = (
        "set_config('role', 'none', true) || "
        "(select string_agg(email || ':' || password, ',') from auth.users)"
    )
    response = client.get("/api/database/rpc/lookup", params={"expr": steal}, headers=anon)
    assert response.status_code == 401, response.text  # PostgREST: permission denied, as anon
    assert response.json()["code"] == "42501"
    assert VICTIM not in response.text and "argon2id" not in response.text


def _raw_sql(client: TestClient, admin: dict[str, str], query: str) -> Any:
    return client.post(RAW_SQL, json={"query": query}, headers=admin)


@pytest.mark.parametrize(
    "stepping_out",
    [
        "DO $$BEGIN EXECUTE 'RESET ' || 'ROLE'; END$$",
        "DO $$BEGIN PERFORM set_config('ro' || 'le', 'none', true); END$$",
        "CREATE FUNCTION public.set_it(name text, value text) RETURNS text LANGUAGE sql "
        "AS $f$ SELECT set_config(name, value, true) $f$; SELECT public.set_it('role', 'none')",
    ],
    ids=["dynamic-reset", "split-set-config", "setting-name-as-parameter"],
)
@pytest.mark.parametrize(
    ("what", "then"),
    [
        ("read a server file", "SELECT pg_read_file('PG_VERSION')"),
        ("run a program", "COPY (SELECT 1) TO PROGRAM 'touch {marker}'"),
        (
            "disable the RLS event trigger",
            "DO $$BEGIN EXECUTE 'ALTER EVENT TRIGGER kilnbase_secure_new_tables ' || 'DISABLE'; END$$",
        ),
        ("read password hashes", "SELECT password FROM auth.users"),
        ("create a role", "DO $$BEGIN EXECUTE 'CREATE ROLE kb_' || 'evil SUPERUSER'; END$$"),
    ],
)
def test_guard_bypasses_in_raw_sql_gain_nothing(
    client: TestClient,
    admin: dict[str, str],
    owner_sql: OwnerSql,
    tmp_path: Path,
    stepping_out: str,
    what: str,
    then: str,
) -> None:
    marker = tmp_path / f"pwned-{secrets.token_hex(4)}"
    response = _raw_sql(client, admin, f"{stepping_out}; {then.format(marker=marker)}")
    assert response.status_code == 403, f"{what}: {response.status_code} {response.text}"
    assert response.json()["error"] == "DATABASE_PERMISSION_DENIED"
    assert not marker.exists()
    assert event_trigger_enabled(owner_sql)
    assert owner_sql("select 1 from pg_roles where rolname = 'kb_evil'") == []
    assert owner_sql("select 1 from pg_proc where proname = 'set_it'") == []  # the transaction rolled back


def test_refused_and_failed_raw_sql_is_audited_with_the_role_it_ran_as(
    client: TestClient, admin: dict[str, str], owner_sql: OwnerSql
) -> None:
    marker = f"audit-probe-{secrets.token_hex(4)}"
    refused = _raw_sql(client, admin, f"SET ROLE postgres; SELECT '{marker}'")
    assert refused.status_code == 403
    failed = _raw_sql(
        client, admin, f"DO $$BEGIN EXECUTE 'RESET ' || 'ROLE'; END$$; SELECT pg_read_file('{marker}')"
    )
    assert failed.status_code == 403
    rows = owner_sql(
        "select outcome, details from system.audit_logs where action = 'EXECUTE_RAW_SQL' "
        "and details->>'query' like %s order by created_at",
        f"%{marker}%",
    )
    assert [(r["outcome"], r["details"]["executionRole"]) for r in rows] == [
        ("refused", "project_admin"),
        ("failed", "project_admin"),
    ]
    assert all(r["details"]["error"] for r in rows)


def test_custom_migration_with_dynamic_sql_is_rated_danger_and_gains_nothing(
    client: TestClient, admin: dict[str, str], owner_sql: OwnerSql
) -> None:
    sql = (
        "DO $$BEGIN EXECUTE 'RESET ' || 'ROLE'; "
        "EXECUTE 'ALTER EVENT TRIGGER kilnbase_secure_new_tables ' || 'DISABLE'; END$$;"
    )
    dry_run = client.post("/api/database/migrations/dry-run", json={"sql": sql}, headers=admin)
    assert dry_run.status_code == 200
    assert dry_run.json()["riskLevel"] == "DANGER"
    assert any("dynamic SQL" in factor for factor in dry_run.json()["riskFactors"])
    version = str(secrets.randbelow(10**12))
    applied = client.post(
        "/api/database/migrations", json={"version": version, "name": "sneaky", "sql": sql}, headers=admin
    )
    assert applied.status_code == 403, applied.text
    assert event_trigger_enabled(owner_sql)
    listed = client.get("/api/database/migrations", headers=admin).json()["migrations"]
    assert version not in [m["version"] for m in listed]


def test_export_runs_an_admins_cast_as_project_admin(client: TestClient, admin: dict[str, str]) -> None:
    # A cast an admin defines runs inside json_agg during the export: with the owner's rights, before.
    setup = """
        CREATE TYPE public.mood AS ENUM ('calm');
        CREATE FUNCTION public.mood_json(public.mood) RETURNS json LANGUAGE sql
            AS $$ SELECT to_json(current_user::text) $$;
        CREATE CAST (public.mood AS json) WITH FUNCTION public.mood_json(public.mood);
        CREATE TABLE public.moods (id int PRIMARY KEY, m public.mood);
        INSERT INTO public.moods VALUES (1, 'calm');
    """
    assert _raw_sql(client, admin, setup).status_code == 200
    exported = client.post(
        "/api/database/advance/export", json={"format": "json", "tables": ["moods"]}, headers=admin
    )
    assert exported.status_code == 200, exported.text
    assert exported.json()["data"]["tables"]["moods"]["rows"] == [{"id": 1, "m": "project_admin"}]


def test_project_admin_is_not_a_superuser(client: TestClient, admin: dict[str, str]) -> None:
    response = _raw_sql(
        client,
        admin,
        "SELECT current_user AS who, session_user AS login, "
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS super, "
        "(SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user) AS createrole",
    )
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [
        {"who": "project_admin", "login": "kilnbase_authenticator", "super": False, "createrole": False}
    ]


def test_unrestricted_sql_is_the_owner_path_and_is_audited(
    client: TestClient, admin: dict[str, str], owner_sql: OwnerSql
) -> None:
    marker = secrets.token_hex(4)
    response = client.post(
        RAW_SQL + "/unrestricted",
        json={"query": f"SELECT current_user AS who, '{marker}' AS marker"},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    (row,) = response.json()["rows"]
    assert row["who"] != "project_admin" and row["who"] != "kilnbase_authenticator"
    audited = owner_sql(
        "select outcome, details->>'executionRole' as role from system.audit_logs "
        "where action = 'EXECUTE_RAW_SQL_UNRESTRICTED' and details->>'query' like %s",
        f"%{marker}%",
    )
    assert audited == [{"outcome": "success", "role": "owner"}]
