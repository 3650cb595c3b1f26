"""No door around approvals through a function: an agent key's call of a routine on the records API
(`/api/database/rpc/:fn`) that deletes or updates every row of a table of two rows or more is rolled back and
refused, as its PATCH or DELETE of every row is; the same call as SQL through run-raw-sql waits for a
person. Calls that change fewer rows, reads, and every call by people run as before."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.security.conftest import KEPT, OwnerSql, admin_table, assert_forbidden, table_notes
from tests.support.app import agent_headers

RPC = "/api/database/rpc"


@pytest.fixture(scope="module")
def caller(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    """An agent key that may write (and so call routines) through the records API."""
    return agent_headers(client, admin, ["records:write"], "caller")


def routines(client: TestClient, admin: dict[str, str], table: str) -> None:
    """`<table>_rewrite(from_id)` sets `note` to 'gone' on the rows from `from_id` on,
    `<table>_purge(from_id)` deletes them (both return what they changed), `<table>_notes()` reads every
    row (VOLATILE, as a function is unless it says otherwise), `<table>_count()` counts them (STABLE)."""
    query = (
        f"create function public.{table}_rewrite(from_id int) returns setof public.{table} language sql as "
        f"$$ update public.{table} set note = 'gone' where id >= from_id returning * $$; "
        f"create function public.{table}_purge(from_id int) returns int language sql as "
        f"$$ with gone as (delete from public.{table} where id >= from_id returning 1) "
        "select count(*)::int from gone $$; "
        f"create function public.{table}_notes() returns setof text language sql as "
        f"$$ select note from public.{table} order by id $$; "
        f"create function public.{table}_count() returns int language sql stable as "
        f"$$ select count(*)::int from public.{table} $$"
    )
    made = client.post("/api/database/advance/rawsql", headers=admin, json={"query": query})
    assert made.status_code == 200, made.text


@pytest.fixture
def with_routines(client: TestClient, admin: dict[str, str], three_rows: str) -> str:
    """A `three_rows` table with its `routines`."""
    routines(client, admin, three_rows)
    return three_rows


#: (routine, Prefer): a function's whole-table change, answered as rows, as a planned count, with no body.
Call = tuple[str, str | None]
CALLS: list[Call] = [
    ("rewrite", None),
    ("rewrite", "count=planned"),
    ("rewrite", "return=minimal"),
    ("purge", None),
]


@pytest.mark.parametrize("call", CALLS, ids=["rewrite", "planned-count", "minimal", "delete"])
def test_an_agents_call_that_changes_every_row_is_refused(
    client: TestClient, caller: dict[str, str], with_routines: str, owner_sql: OwnerSql, call: Call
) -> None:
    table, (routine, prefer) = with_routines, call
    headers = caller if prefer is None else {**caller, "Prefer": prefer}
    refused = client.post(f"{RPC}/{table}_{routine}", headers=headers, json={"from_id": 1})
    assert_forbidden(refused, f"public.{table} (all 3 rows it held)", "run-raw-sql")
    assert refused.json()["message"].startswith(
        f"An agent key may not change every row of a table through public.{table}_{routine}"
    )
    assert "nothing was changed" in refused.json()["message"]
    assert table_notes(owner_sql, table) == KEPT


def test_an_agents_ordinary_calls_run_at_once(
    client: TestClient, admin: dict[str, str], caller: dict[str, str], three_rows: str, owner_sql: OwnerSql
) -> None:
    """Some rows of three, a table's only row, reads by GET and by POST: answered as before."""
    routines(client, admin, three_rows)
    rewrote = client.post(f"{RPC}/{three_rows}_rewrite", headers=caller, json={"from_id": 2})
    assert rewrote.status_code == 200, rewrote.text
    assert rewrote.json() == [{"id": 2, "note": "gone"}, {"id": 3, "note": "gone"}]
    assert table_notes(owner_sql, three_rows) == [(1, "keep"), (2, "gone"), (3, "gone")]
    notes = client.post(f"{RPC}/{three_rows}_notes", headers=caller, json={})
    assert notes.status_code == 200 and notes.json() == ["keep", "gone", "gone"], notes.text
    counted = client.get(f"{RPC}/{three_rows}_count", headers=caller)
    assert counted.status_code == 200 and counted.json() == 3, counted.text
    assert client.get(f"{RPC}/{three_rows}_notes", headers=caller).json() == ["keep", "gone", "gone"]

    single = admin_table(client, admin, "single", ["old"])
    routines(client, admin, single)
    only = client.post(f"{RPC}/{single}_rewrite", headers=caller, json={"from_id": 1})
    assert only.status_code == 200, only.text
    assert table_notes(owner_sql, single) == [(1, "gone")]


def test_a_persons_call_runs_and_an_agents_runs_once_approved_as_sql(
    client: TestClient, admin: dict[str, str], three_rows: str, owner_sql: OwnerSql
) -> None:
    """The API key's call that changes every row commits at once. The agent is sent to run-raw-sql, where
    the same call as SQL waits for a person and runs once approved."""
    routines(client, admin, three_rows)
    person = client.post(f"{RPC}/{three_rows}_rewrite", headers=admin, json={"from_id": 1})
    assert person.status_code == 200, person.text
    assert table_notes(owner_sql, three_rows) == [(1, "gone"), (2, "gone"), (3, "gone")]

    writer = agent_headers(client, admin, ["database:write"], "caller-sql")
    query = f"select count(*) from public.{three_rows}_purge(1)"
    held = client.post("/api/database/advance/rawsql", headers=writer, json={"query": query})
    assert held.status_code == 202, held.text
    assert held.json()["status"] == "pending_approval", held.json()
    assert len(table_notes(owner_sql, three_rows)) == 3
    approved = client.post(f"/api/approvals/{held.json()['changeRequestId']}/approve", headers=admin, json={})
    assert approved.status_code == 200 and approved.json()["status"] == "done", approved.text
    assert table_notes(owner_sql, three_rows) == []
