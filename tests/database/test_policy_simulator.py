"""The RLS policy simulator (`POST /api/database/policies/simulate`, the `simulate-policy` tool) over a real
database: decisions as InsForge classifies them, Kilnbase's own answer for project_admin (no BYPASSRLS: it
bypasses RLS as the owner of its tables, unless a table forces RLS), clean 4xx for every mistake, nothing
ever persisted, and agent keys' reach.

Each test makes its own table (`owned_table`), so the tests pass in any order."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.database.conftest import NewName
from tests.support.app import agent_headers, mcp_call, services_of

USER_A = "550e8400-e29b-41d4-a716-446655440001"
USER_B = "550e8400-e29b-41d4-a716-446655440002"
PATH = "/api/database/policies/simulate"

Sql = Callable[[str], list[dict[str, Any]]]


@pytest.fixture
def run_sql(client: TestClient, admin: dict[str, str]) -> Sql:
    def run(query: str) -> list[dict[str, Any]]:
        response = client.post("/api/database/advance/rawsql", headers=admin, json={"query": query})
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["rows"]
        return rows

    return run


@pytest.fixture
def make_table(run_sql: Sql, new_name: NewName) -> Callable[..., str]:
    """`make_table("slow", "id serial primary key", "insert into {table} default values", ...)`: a new
    table in public, then each statement with its name filled in."""

    def make(prefix: str, columns: str, *then: str) -> str:
        table = new_name(prefix)
        run_sql(f"create table {table} ({columns})")
        for statement in then:
            run_sql(statement.format(table=table))
        return table

    return make


@pytest.fixture
def owned_table(run_sql: Sql, new_name: NewName) -> str:
    """A table in public with owner-only policies for authenticated users: two rows of A's, one of B's. RLS,
    the grants and project_admin_policy come from Kilnbase's event trigger."""
    table = new_name("todos")
    run_sql(
        f"create table {table} (id serial primary key, user_id uuid not null, title text not null, "
        "done boolean not null default false)"
    )
    for command, clause in (
        ("select", "using (auth.uid() = user_id)"),
        ("insert", "with check (auth.uid() = user_id)"),
        ("update", "using (auth.uid() = user_id)"),
        ("delete", "using (auth.uid() = user_id)"),
    ):
        run_sql(f"create policy owner_{command} on {table} for {command} to authenticated {clause}")
    run_sql(
        f"insert into {table} (user_id, title) values "
        f"('{USER_A}', 'a-one'), ('{USER_A}', 'a-two'), ('{USER_B}', 'b-one')"
    )
    return table


def simulate(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post(PATH, headers=headers, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def contents(run_sql: Sql, table: str) -> list[dict[str, Any]]:
    return run_sql(f"select id, user_id::text, title, done from {table} order by id")


def test_select_as_the_owner_sees_only_their_rows(
    client: TestClient, admin: dict[str, str], owned_table: str
) -> None:
    result = simulate(
        client, admin, table=owned_table, operation="SELECT", role="authenticated", claims={"sub": USER_A}
    )
    assert result["decision"] == "partial"
    assert (result["rowsVisible"], result["rowsTotal"], result["rowsAffected"]) == (2, 3, None)
    assert {row["user_id"] for row in result["sampleRows"]} == {USER_A}
    assert list(result["sampleRows"][0]) == ["id", "user_id", "title", "done"]
    assert result["rlsEnabled"] is True and result["bypassRls"] is False
    assert result["effectiveClaims"] == {"sub": USER_A, "role": "authenticated"}
    select = next(p for p in result["applicablePolicies"] if p["policyName"] == "owner_select")
    assert select == {
        "tableName": owned_table,
        "policyName": "owner_select",
        "cmd": "SELECT",
        "roles": ["authenticated"],
        "qual": "(auth.uid() = user_id)",
        "withCheck": None,
        "permissive": True,
    }
    assert "2 of 3" in result["explanation"]
    assert result["exampleQuery"].startswith('BEGIN;\nSET LOCAL ROLE "authenticated";')
    assert result["exampleQuery"].endswith(f'select * from "public"."{owned_table}" limit 5;\nROLLBACK;')


def test_select_without_claims_or_as_anon_is_denied(
    client: TestClient, admin: dict[str, str], owned_table: str
) -> None:
    anon = simulate(client, admin, table=owned_table, operation="SELECT", role="anon")
    assert (anon["decision"], anon["rowsVisible"], anon["rowsTotal"]) == ("denied", 0, 3)
    assert anon["applicablePolicies"] == []
    assert "denied by default" in anon["explanation"]
    nobody = simulate(client, admin, table=owned_table, operation="SELECT", role="authenticated")
    assert (nobody["decision"], nobody["rowsVisible"], nobody["sampleRows"]) == ("denied", 0, [])


def test_custom_claims_and_match_narrow_the_rows(
    client: TestClient, admin: dict[str, str], owned_table: str
) -> None:
    mine = simulate(
        client,
        admin,
        table=owned_table,
        operation="SELECT",
        role="authenticated",
        claims={"sub": USER_A, "role": "project_admin"},  # (the simulated role wins)
        match={"title": "a-one"},
        sampleLimit=0,
    )
    assert (mine["decision"], mine["rowsVisible"], mine["rowsTotal"]) == ("allowed", 1, 1)
    assert mine["sampleRows"] is None
    assert mine["effectiveClaims"]["role"] == "authenticated"
    assert mine["exampleQuery"].splitlines()[3] == (
        f'select count(*) from "public"."{owned_table}" where "title" = \'a-one\';'
    )


def test_insert_for_another_user_is_denied_and_nothing_persists(
    client: TestClient, admin: dict[str, str], owned_table: str, run_sql: Sql
) -> None:
    before = contents(run_sql, owned_table)

    def insert_as_a(owner: str, title: str) -> dict[str, Any]:
        row = {"user_id": owner, "title": title}
        claims = {"sub": USER_A}
        return simulate(
            client, admin, table=owned_table, operation="INSERT", role="authenticated", claims=claims, row=row
        )

    spoof = insert_as_a(USER_B, "spoof")
    assert (spoof["decision"], spoof["rowsAffected"]) == ("denied", 0)
    assert "row-level security" in spoof["denialReason"]
    own = insert_as_a(USER_A, "mine")
    assert (own["decision"], own["rowsAffected"], own["rowsTotal"]) == ("allowed", 1, None)
    assert contents(run_sql, owned_table) == before


def test_update_and_delete_decisions_and_nothing_persists(
    client: TestClient, admin: dict[str, str], owned_table: str, run_sql: Sql
) -> None:
    before = contents(run_sql, owned_table)

    def mutate(operation: str, sub: str, **body: Any) -> dict[str, Any]:
        return simulate(
            client,
            admin,
            table=owned_table,
            operation=operation,
            role="authenticated",
            claims={"sub": sub},
            **body,
        )

    own = mutate("UPDATE", USER_A, row={"done": True}, match={"user_id": USER_A})
    assert (own["decision"], own["rowsAffected"], own["rowsTotal"]) == ("allowed", 2, 2)
    every = mutate("UPDATE", USER_A, row={"done": True})
    assert (every["decision"], every["rowsAffected"], every["rowsTotal"]) == ("partial", 2, 3)
    others = mutate("UPDATE", USER_B, row={"title": "hacked"}, match={"user_id": USER_A})
    assert (others["decision"], others["rowsAffected"], others["rowsTotal"]) == ("denied", 0, 2)
    reassign = mutate("UPDATE", USER_A, row={"user_id": USER_B}, match={"user_id": USER_A})
    assert reassign["decision"] == "denied"
    assert "row-level security" in reassign["denialReason"]
    assert mutate("DELETE", USER_A, match={"user_id": USER_A})["decision"] == "allowed"
    assert mutate("DELETE", USER_B, match={"user_id": USER_A})["decision"] == "denied"
    assert mutate("DELETE", USER_A)["decision"] == "partial"
    nothing = mutate("DELETE", USER_A, match={"title": "no such title"})
    assert (nothing["decision"], nothing["rowsTotal"]) == ("allowed", 0)
    assert "matched no rows" in nothing["explanation"]
    assert contents(run_sql, owned_table) == before


def test_without_rls_table_privileges_decide(
    client: TestClient, admin: dict[str, str], make_table: Callable[..., str]
) -> None:
    table = make_table(
        "open",
        "id serial primary key, note text",
        "insert into {table} (note) values ('x'), ('y')",
        "alter table {table} disable row level security",
        "revoke all on {table} from anon",
    )
    reader = simulate(client, admin, table=table, operation="SELECT", role="authenticated")
    assert (reader["decision"], reader["rowsVisible"], reader["rlsEnabled"]) == ("allowed", 2, False)
    assert "not enabled" in reader["explanation"]
    anon = simulate(client, admin, table=table, operation="SELECT", role="anon")
    assert anon["decision"] == "denied"
    assert anon["denialReason"] == f"permission denied for table {table}"
    assert "GRANT" in anon["explanation"]


def test_project_admin_bypasses_as_the_owner_unless_the_table_forces_rls(
    client: TestClient, admin: dict[str, str], owned_table: str, run_sql: Sql
) -> None:
    owner = simulate(client, admin, table=owned_table, operation="SELECT", role="project_admin")
    assert (owner["decision"], owner["bypassRls"], owner["bypassReason"]) == ("bypass", True, "owner")
    assert owner["rowsVisible"] == 3
    assert "owns the table" in owner["explanation"]
    run_sql(f"alter table {owned_table} force row level security")
    forced = simulate(client, admin, table=owned_table, operation="DELETE", role="project_admin")
    assert (forced["decision"], forced["bypassRls"], forced["bypassReason"]) == ("allowed", False, None)
    # (No baseline: the total is counted with project_admin's rights, and RLS still applies to it here.)
    assert (forced["rowsAffected"], forced["rowsTotal"]) == (3, None)
    assert [p["policyName"] for p in forced["applicablePolicies"]] == ["project_admin_policy"]
    assert len(contents(run_sql, owned_table)) == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"operation": "SELECT", "role": "anon"}, "table: Field required"),
        ({"operation": "TRUNCATE", "role": "anon"}, "operation: Input should be"),
        ({"operation": "SELECT", "role": "postgres"}, "role: Input should be"),
        ({"operation": "SELECT", "role": "anon", "sampleLimit": 1000}, "sampleLimit: Input should be less"),
        ({"operation": "SELECT", "role": "anon", "sampleLimit": "5"}, "sampleLimit: Input should be a valid"),
        ({"operation": "INSERT", "role": "anon", "row": [1]}, "row: Input should be a valid dictionary"),
        ({"operation": "SELECT", "role": "anon", "match": {"a\nb": 1}}, "not a valid column name"),
        ({"operation": "SELECT", "role": "anon", "claims": {"x": "y" * 9000}}, "claims: Value error"),
        ({"operation": "UPDATE", "role": "authenticated"}, 'requires a "row" payload'),
        ({"operation": "SELECT", "role": "anon", "match": {"nope": 1}}, 'column "nope" does not exist'),
        (
            {"operation": "SELECT", "role": "anon", "match": {"user_id": "x"}},
            "invalid input syntax for type uuid",
        ),
        ({"operation": "INSERT", "role": "authenticated", "row": {"nope": 1}}, 'column "nope" of relation'),
    ],
)
def test_mistakes_are_400s(
    client: TestClient, admin: dict[str, str], owned_table: str, body: dict[str, Any], message: str
) -> None:
    if "operation" in body and "table" not in body and message != "table: Field required":
        body = {**body, "table": owned_table}
    response = client.post(PATH, headers=admin, json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


def test_a_missing_table_is_404_and_a_view_400(
    client: TestClient, admin: dict[str, str], owned_table: str, run_sql: Sql
) -> None:
    missing = client.post(
        PATH, headers=admin, json={"table": "no_such_table", "operation": "SELECT", "role": "anon"}
    )
    assert (missing.status_code, missing.json()["error"]) == (404, "DATABASE_NOT_FOUND")
    run_sql(f"create view {owned_table}_v as select * from {owned_table}")
    view = client.post(
        PATH, headers=admin, json={"table": f"{owned_table}_v", "operation": "SELECT", "role": "anon"}
    )
    assert view.status_code == 400
    assert "not a base table" in view.json()["message"]


@pytest.mark.parametrize(
    ("schema", "table"), [("auth", "users"), ("system", "audit_logs"), ("pg_catalog", "pg_class")]
)
def test_kilnbase_and_postgres_schemas_are_refused(
    client: TestClient, admin: dict[str, str], schema: str, table: str
) -> None:
    body = {"schema": schema, "table": table, "operation": "SELECT", "role": "project_admin"}
    response = client.post(PATH, headers=admin, json=body)
    assert (response.status_code, response.json()["error"]) == (403, "FORBIDDEN")


def test_admins_only(
    client: TestClient, anon: dict[str, str], user: dict[str, str], owned_table: str
) -> None:
    body = {"table": owned_table, "operation": "SELECT", "role": "anon"}
    assert client.post(PATH, json=body).status_code == 401
    assert client.post(PATH, headers=anon, json=body).status_code == 401
    assert client.post(PATH, headers=user, json=body).status_code == 403


def test_simulations_are_audited(client: TestClient, admin: dict[str, str], owned_table: str) -> None:
    simulate(client, admin, table=owned_table, operation="SELECT", role="anon")
    entries = client.get(
        "/api/logs/audits", headers=admin, params={"action": "SIMULATE_RLS_POLICY", "limit": 50}
    ).json()
    mine = next(e for e in entries if e["details"].get("table") == owned_table)
    assert mine["module"] == "DATABASE"
    assert mine["details"] == {
        "schema": "public",
        "table": owned_table,
        "operation": "SELECT",
        "role": "anon",
        "decision": "denied",
    }


def test_a_statement_timeout_is_a_clear_503(
    client: TestClient, admin: dict[str, str], make_table: Callable[..., str]
) -> None:
    table = make_table(
        "slow",
        "id serial primary key",
        "insert into {table} default values",
        "create policy slow on {table} for select to anon using ((select true from pg_sleep(1)))",
    )
    simulator = services_of(client).database.policy_simulator
    simulator.statement_timeout = "100ms"
    try:
        response = client.post(
            PATH, headers=admin, json={"table": table, "operation": "SELECT", "role": "anon"}
        )
    finally:
        simulator.statement_timeout = "5s"
    assert response.status_code == 503, response.text
    assert response.json()["message"] == "Policy simulation timed out before it could complete."
    assert "100ms" in response.json()["nextActions"]


def test_agent_keys_with_database_read(
    client: TestClient, admin: dict[str, str], owned_table: str, run_sql: Sql
) -> None:
    reader = agent_headers(client, admin, ["database:read"])
    arguments: dict[str, object] = {
        "table": owned_table,
        "operation": "SELECT",
        "role": "authenticated",
        "claims": {"sub": USER_A},
    }
    result = json.loads(mcp_call(client, reader, "simulate-policy", arguments))
    assert (result["decision"], result["rowsVisible"]) == ("partial", 2)
    # database:read shows schemas, policies and counts, not rows: the sample is withheld.
    assert (result["sampleRows"], result["sampleRowsWithheld"]) == (None, True)
    rows_reader = agent_headers(client, admin, ["database:read", "records:read"])
    full = json.loads(mcp_call(client, rows_reader, "simulate-policy", arguments))
    assert len(full["sampleRows"]) == 2 and full["sampleRowsWithheld"] is False
    # The REST route is a read for agent keys too.
    response = client.post(PATH, headers=reader, json=arguments)
    assert response.status_code == 200 and response.json()["sampleRows"] is None

    insert: dict[str, object] = {**arguments, "operation": "INSERT", "row": {"user_id": USER_A, "title": "x"}}
    refused = mcp_call(client, reader, "simulate-policy", insert)
    assert "database:write" in refused
    writer = agent_headers(client, admin, ["database:write"])
    assert json.loads(mcp_call(client, writer, "simulate-policy", insert))["decision"] == "allowed"
    assert len(contents(run_sql, owned_table)) == 3


def test_the_baseline_never_runs_the_apps_code_as_the_owner(
    client: TestClient, admin: dict[str, str], run_sql: Sql, new_name: NewName
) -> None:
    """A column of the app's own type, compared with the app's own `=`: the total is counted with the app's
    rights, so that function runs as a request role, never as the owner (which would hand the app the
    owner's rights). The function refuses to run as anyone else, so a count as the owner would fail."""
    table, mood = new_name("moods"), new_name("mood")
    run_sql(f"create type {mood} as enum ('calm', 'cross')")
    run_sql(
        f"create function {mood}_eq(a {mood}, b {mood}) returns boolean language plpgsql as $$ "
        "begin if current_user not in ('project_admin', 'authenticated', 'anon') then "
        "raise exception 'ran as %', current_user; end if; return a::text = b::text; end $$"
    )
    run_sql(f"create operator = (leftarg = {mood}, rightarg = {mood}, function = {mood}_eq)")
    run_sql(f"create table {table} (id serial primary key, feeling {mood} not null)")
    run_sql(f"insert into {table} (feeling) values ('calm'), ('cross'), ('calm')")
    result = simulate(
        client, admin, table=table, operation="DELETE", role="authenticated", match={"feeling": "calm"}
    )
    assert result["rowsTotal"] == 2
