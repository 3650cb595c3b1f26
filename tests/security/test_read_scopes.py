"""A read scope changes nothing: `explain-sql` (a read tool, so any `database:read` agent key and read-only
mode reach it) runs its SELECT under EXPLAIN ANALYZE, and a SELECT can still change state that a rollback
does not undo (sequences), or write through a data-modifying CTE. It runs in a read-only transaction."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.security.conftest import OwnerSql

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def reader(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    """An agent key that may only read the database."""
    body = {"name": f"reader-{secrets.token_hex(3)}", "scopes": ["database:read"]}
    created = client.post("/api/agents/keys", headers=admin, json=body)
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}", **MCP_HEADERS}


def explain(client: TestClient, reader: dict[str, str], query: str) -> dict[str, Any]:
    call = {"name": "explain-sql", "arguments": {"query": query}}
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}
    response = client.post("/mcp", headers=reader, json=message)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


@pytest.mark.parametrize(
    "query",
    [
        "select setval('public.counted_id_seq', 1000000)",
        "select nextval('public.counted_id_seq')",
        "with added as (insert into public.counted (note) values ('by a reader') returning id) "
        "select * from added",
    ],
    ids=["setval", "nextval", "insert-cte"],
)
def test_explain_sql_by_a_read_scoped_agent_changes_nothing(
    client: TestClient, admin: dict[str, str], reader: dict[str, str], owner_sql: OwnerSql, query: str
) -> None:
    made = client.post(
        "/api/database/advance/rawsql",
        headers=admin,
        json={"query": "create table if not exists public.counted (id serial primary key, note text)"},
    )
    assert made.status_code == 200, made.text  # project_admin's own table: a reader's key reaches it
    before = owner_sql("select last_value, is_called from public.counted_id_seq")
    result = explain(client, reader, query)
    assert result["isError"] is True, result
    assert "read-only transaction" in json.dumps(result)
    assert owner_sql("select last_value, is_called from public.counted_id_seq") == before
    assert owner_sql("select count(*)::int as n from public.counted") == [{"n": 0}]


def test_explain_sql_still_explains_a_plain_select(client: TestClient, reader: dict[str, str]) -> None:
    result = explain(client, reader, "select 1 as one")
    assert result["isError"] is False, result
    plan = json.loads(result["content"][0]["text"])["rows"][0]["QUERY PLAN"]
    assert plan[0]["Plan"]["Actual Rows"] == 1  # ANALYZE still runs it
