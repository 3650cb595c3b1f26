"""Each rule that a test can provoke for real: the condition made in the module's database is found by the
next scan, and gone from the scan after it is fixed. Tables are named per test, so tests share nothing."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def owner(database_url: str, *statements: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def findings(client: TestClient, admin: dict[str, str], rule: str) -> list[dict[str, Any]]:
    """A new scan's findings of `rule`."""
    scanned = client.post("/api/advisor/scan", headers=admin)
    assert scanned.status_code == 201, scanned.text
    assert scanned.json()["status"] == "completed", scanned.json()
    assert scanned.json()["errorMessage"] is None, scanned.json()
    page = client.get("/api/advisor/issues?limit=1000", headers=admin)
    assert page.status_code == 200, page.text
    return [issue for issue in page.json()["issues"] if issue["ruleId"] == rule]


def objects(client: TestClient, admin: dict[str, str], rule: str) -> dict[str, dict[str, Any]]:
    return {issue.get("affectedObject", ""): issue for issue in findings(client, admin, rule)}


def test_rls_disabled_readable_by_anon_is_critical(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    table = name("open")
    owner(
        database_url,
        f"create table public.{table} (id int)",
        f"alter table public.{table} disable row level security",
    )
    found = objects(client, admin, "rls-disabled")[f"public.{table}"]
    assert found["severity"] == "critical" and found["category"] == "security"
    assert found["title"] == "Table publicly accessible"
    assert "anon key" in found["description"]
    assert f"ALTER TABLE public.{table} ENABLE ROW LEVEL SECURITY;" in found["recommendation"]

    owner(database_url, f"revoke select on public.{table} from anon")
    assert objects(client, admin, "rls-disabled")[f"public.{table}"]["title"] == (
        "Table accessible to all authenticated users"
    )
    owner(database_url, f"alter table public.{table} enable row level security")
    assert f"public.{table}" not in objects(client, admin, "rls-disabled")


def test_rls_no_policy(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    table = name("closed")
    owner(
        database_url,
        f"create table public.{table} (id int)",
        f"drop policy project_admin_policy on public.{table}",
    )
    found = objects(client, admin, "rls-no-policy")[f"public.{table}"]
    assert found["severity"] == "critical"
    # A table Kilnbase created keeps its admin policy: closed to clients by design, not reported.
    other = name("fresh")
    owner(database_url, f"create table public.{other} (id int)")
    assert f"public.{other}" not in objects(client, admin, "rls-no-policy")
    owner(
        database_url, f"create policy read_all on public.{table} for select to authenticated using (id > 0)"
    )
    assert f"public.{table}" not in objects(client, admin, "rls-no-policy")


def test_rls_permissive_to_anon_is_critical(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    table = name("wide")
    owner(
        database_url,
        f"create table public.{table} (id int, user_id uuid)",
        f"create policy everyone on public.{table} for select to anon using (true)",
        f"create policy members on public.{table} for update to authenticated using ((1 = 1))",
    )
    found = objects(client, admin, "rls-permissive")
    anon = found[f"public.{table} (everyone)"]
    assert anon["severity"] == "critical"
    assert anon["title"] == "Permissive RLS policy exposes data to anonymous users"
    assert found[f"public.{table} (members)"]["severity"] == "warning"
    # Kilnbase's own project_admin_policy (USING (true), for project_admin) is not reported.
    assert f"public.{table} (project_admin_policy)" not in found
    owner(
        database_url,
        f"alter policy everyone on public.{table} using (user_id is not null)",
        f"drop policy members on public.{table}",
    )
    after = objects(client, admin, "rls-permissive")
    assert f"public.{table} (everyone)" not in after and f"public.{table} (members)" not in after


def test_rls_select_only(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    table = name("readonly")
    owner(
        database_url,
        f"create table public.{table} (id int, user_id uuid)",
        f"create policy reads on public.{table} for select to authenticated "
        "using (user_id = (select auth.uid()))",
    )
    found = objects(client, admin, "rls-select-only")[f"public.{table}"]
    assert found["severity"] == "info"
    owner(
        database_url,
        f"create policy writes on public.{table} for insert to authenticated "
        "with check (user_id = (select auth.uid()))",
    )
    assert f"public.{table}" not in objects(client, admin, "rls-select-only")


def test_dangerous_function(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    function = name("escalate")
    owner(
        database_url,
        f"create function public.{function}(n int) returns int language sql security definer as 'select n'",
    )
    found = objects(client, admin, "dangerous-function")[f"public.{function}(n integer)"]
    assert found["severity"] == "critical"
    assert "anon, authenticated" in found["description"]
    assert "search_path is not set" in found["description"]
    owner(database_url, f"revoke execute on function public.{function}(int) from public, anon, authenticated")
    assert f"public.{function}(n integer)" not in objects(client, admin, "dangerous-function")


def test_missing_fk_index(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    parent, child = name("parent"), name("child")
    owner(
        database_url,
        f"create table public.{parent} (id int primary key)",
        f"create table public.{child} (id int primary key, parent_id int, "
        f"constraint {child}_parent foreign key (parent_id) references public.{parent} (id))",
    )
    found = objects(client, admin, "missing-fk-index")[f"public.{child}.{child}_parent"]
    assert found["severity"] == "warning" and found["category"] == "performance"
    assert found["recommendation"] == f"CREATE INDEX CONCURRENTLY ON public.{child} (parent_id);"
    owner(database_url, f"create index on public.{child} (parent_id)")
    assert f"public.{child}.{child}_parent" not in objects(client, admin, "missing-fk-index")


def test_rls_policy_perf_and_missing_rls_index(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    table = name("owned")
    owner(
        database_url,
        f"create table public.{table} (id int, owner_id uuid)",
        f"create policy mine on public.{table} for all to authenticated using (auth.uid() = owner_id)",
    )
    assert f"public.{table} (mine)" in objects(client, admin, "rls-policy-perf")
    assert f"public.{table}.owner_id" in objects(client, admin, "missing-rls-index")
    owner(
        database_url,
        f"alter policy mine on public.{table} using ((select auth.uid()) = owner_id)",
        f"create index on public.{table} (owner_id)",
    )
    assert f"public.{table} (mine)" not in objects(client, admin, "rls-policy-perf")
    assert f"public.{table}.owner_id" not in objects(client, admin, "missing-rls-index")


def test_sequence_exhaustion(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    sequence = name("counter")
    owner(
        database_url,
        f"create sequence public.{sequence} as integer",
        f"select setval('public.{sequence}', 2000000000)",
    )
    found = objects(client, admin, "sequence-exhaustion")[f"public.{sequence}"]
    assert found["severity"] == "critical" and found["category"] == "health"
    owner(database_url, f"alter sequence public.{sequence} as bigint")
    assert f"public.{sequence}" not in objects(client, admin, "sequence-exhaustion")


def test_dead_tuples_and_stale_statistics(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    table = name("churn")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"create table public.{table} (id int) with (autovacuum_enabled = false)")
        conn.execute(f"insert into public.{table} select generate_series(1, 3000)")
        conn.execute(f"delete from public.{table} where id <= 2000")
        conn.execute("select pg_stat_force_next_flush()")
        conn.execute("select 1")
    dead = objects(client, admin, "dead-tuples")[f"public.{table}"]
    assert dead["severity"] == "warning" and "2000 dead rows" in dead["description"]
    assert objects(client, admin, "stale-statistics")[f"public.{table}"]["title"] == "Table never analyzed"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"vacuum (analyze) public.{table}")
        conn.execute("select pg_stat_force_next_flush()")
        conn.execute("select 1")
    assert f"public.{table}" not in objects(client, admin, "dead-tuples")
    assert f"public.{table}" not in objects(client, admin, "stale-statistics")


def test_unused_index(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    table = name("indexed")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"create table public.{table} (id int, code int)")
        conn.execute(f"insert into public.{table} select n, n from generate_series(1, 5000) as n")
        conn.execute(f"create index {table}_code on public.{table} (code)")
    assert f"public.{table}_code" in objects(client, admin, "unused-index")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("set enable_seqscan = off")
        conn.execute(f"select * from public.{table} where code = 7")
        conn.execute("select pg_stat_force_next_flush()")
        conn.execute("select 1")
    assert f"public.{table}_code" not in objects(client, admin, "unused-index")


@pytest.fixture
def idle_transaction(database_url: str) -> Iterator[int]:
    """A session of this database idle in a transaction; ended on the way out."""
    conn = psycopg.connect(database_url)
    try:
        conn.execute("select 1")  # (opens the transaction, then sits idle in it)
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        yield int(row[0])
    finally:
        conn.close()


def test_idle_in_transaction(client: TestClient, admin: dict[str, str], idle_transaction: int) -> None:
    time.sleep(1.5)
    found = [
        issue
        for issue in findings(client, admin, "idle-in-transaction")
        if f"PID {idle_transaction} " in issue["description"]
    ]
    assert len(found) == 1 and found[0]["affectedObject"] == "pg_stat_activity"
    assert found[0]["severity"] == "warning"


def test_idle_transaction_ended_is_not_reported(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("select 1")
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        pid = int(row[0])
        time.sleep(1.5)
        conn.commit()
    assert not [
        issue
        for issue in findings(client, admin, "idle-in-transaction")
        if f"PID {pid} " in issue["description"]
    ]


def test_long_running_query(client: TestClient, admin: dict[str, str], database_url: str) -> None:
    marker = name("sleeper")
    started = threading.Event()

    def sleep() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            started.set()
            conn.execute(f"select pg_sleep(4) as {marker}")

    sleeper = threading.Thread(target=sleep)
    sleeper.start()
    try:
        started.wait(10)
        time.sleep(1.8)
        found = [
            issue for issue in findings(client, admin, "long-running-query") if marker in issue["description"]
        ]
        assert len(found) == 1, found
        assert found[0]["severity"] == "warning" and found[0]["title"].startswith("Query running for ")
    finally:
        sleeper.join()
    assert not [
        issue for issue in findings(client, admin, "long-running-query") if marker in issue["description"]
    ]


def test_slow_query_needs_pg_stat_statements(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        installed = conn.execute("select 1 from pg_extension where extname = 'pg_stat_statements'").fetchone()
    if installed is None:
        scanned = client.post("/api/advisor/scan", headers=admin).json()
        assert scanned["skippedRules"][0]["ruleId"] == "slow-query"
        assert "CREATE EXTENSION pg_stat_statements" in scanned["skippedRules"][0]["reason"]
        assert (
            client.get("/api/advisor/latest", headers=admin).json()["skippedRules"] == scanned["skippedRules"]
        )
    marker = name("slow")
    owner(database_url, "create extension if not exists pg_stat_statements")
    owner(database_url, f"select pg_sleep(1.1) as {marker}")
    found = [issue for issue in findings(client, admin, "slow-query") if marker in issue["description"]]
    assert len(found) == 1 and found[0]["affectedObject"].startswith("query ")
    assert client.get("/api/advisor/latest", headers=admin).json()["skippedRules"] == []
    owner(database_url, "select pg_stat_statements_reset()")
    assert not [issue for issue in findings(client, admin, "slow-query") if marker in issue["description"]]
