"""A column's data replaced by a type change: `ALTER COLUMN ... TYPE ... USING <an expression that does not
read the column>` sets every value at once, as dropping the column loses them, so an agent's waits for a
person as a dropped column does; a type change that converts the column's own values still runs."""

from __future__ import annotations

import secrets

import pytest
from starlette.testclient import TestClient

from tests.security.conftest import OwnerSql, admin_table
from tests.support.app import agent_headers


@pytest.fixture(scope="module")
def writer(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    return agent_headers(client, admin, ["database:write"], "retyper")


@pytest.fixture
def important(client: TestClient, admin: dict[str, str]) -> str:
    return admin_table(client, admin, "retyped", ["keep"])


def notes(owner_sql: OwnerSql, table: str) -> list[object]:
    return [row["note"] for row in owner_sql(f"select note from public.{table} order by id")]


@pytest.mark.parametrize(
    "using",
    ["''", "null", "'gone'::text", "lower('GONE')", "(select 'gone')"],
    ids=["empty", "null", "literal", "function", "subquery"],
)
def test_an_agents_type_change_that_replaces_a_columns_values_waits(
    client: TestClient, writer: dict[str, str], important: str, owner_sql: OwnerSql, using: str
) -> None:
    query = f"ALTER TABLE public.{important} ALTER COLUMN note TYPE text USING {using}"
    raw = client.post("/api/database/advance/rawsql", headers=writer, json={"query": query})
    assert raw.status_code == 202, raw.text
    assert "note" in raw.json()["reason"]
    body = {"version": str(secrets.randbelow(10**9) + 1), "name": "retype", "sql": query}
    migration = client.post("/api/database/migrations", headers=writer, json=body)
    assert migration.status_code == 202, migration.text
    assert notes(owner_sql, important) == ["keep"]


@pytest.mark.parametrize(
    "change",
    ["TYPE varchar(100)", "TYPE varchar(100) USING note::varchar(100)", 'TYPE text USING upper("note")'],
    ids=["plain", "cast", "function-of-the-column"],
)
def test_an_agents_type_change_that_converts_the_values_runs(
    client: TestClient, writer: dict[str, str], important: str, owner_sql: OwnerSql, change: str
) -> None:
    query = f"ALTER TABLE public.{important} ALTER COLUMN note {change}"
    raw = client.post("/api/database/advance/rawsql", headers=writer, json={"query": query})
    assert raw.status_code == 200, raw.text
    assert notes(owner_sql, important) in (["keep"], ["KEEP"])
