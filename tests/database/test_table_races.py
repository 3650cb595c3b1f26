"""Two requests on one table at once: each gets the answer it would get alone, and no agent's drop runs
unapproved because of what changed between the approval check and the drop.

The interleavings are driven, not hoped for: a side connection holds a lock that one request must take, and
the test waits until the requests are queued on it (`pg_stat_activity`) before it lets go."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.capability import HeldForApproval
from kilnbase.identity.actor import Actor
from kilnbase.identity.agent_keys import AgentKey
from kilnbase.identity.principal import agent_principal
from tests.database.conftest import NewName
from tests.support.app import services_of
from tests.support.side_sql import Sql, sql_runner

TABLES = "/api/database/tables"


@pytest.fixture
def sql(database_url: str) -> Any:
    with sql_runner(database_url) as run:
        yield run


def create(client: TestClient, admin: dict[str, str], body: dict[str, Any]) -> httpx2.Response:
    return client.post(TABLES, json=body, headers=admin)


def wait_for_lock_waiters(sql: Sql, count: int, naming: str) -> None:
    """Until `count` statements naming `naming` wait on a lock (the requests queued behind the side one)."""
    deadline = time.monotonic() + 30
    while True:
        waiting = sql(
            "select count(*) as n from pg_stat_activity "
            "where datname = current_database() and wait_event_type = 'Lock' and query like %s",
            f"%{naming}%",
        )[0]["n"]
        if waiting >= count:
            return
        assert time.monotonic() < deadline, f"{waiting} of {count} requests reached the lock"
        time.sleep(0.02)


def test_two_creates_of_one_table_at_once_get_one_table_and_the_duplicate_answer(
    client: TestClient, admin: dict[str, str], new_name: NewName, database_url: str, sql: Sql
) -> None:
    """The second create passes the existence check while the first has made the table but not committed
    it; it then waits for the first, and gets what a create of an existing table gets (InsForge's 400
    `DATABASE_DUPLICATE`), not Postgres's unique violation in its catalog."""
    parent, table = new_name("parents"), new_name("raced")
    made = create(client, admin, {"tableName": parent, "columns": [{"columnName": "name", "type": "string"}]})
    assert made.status_code == 201, made.text
    # The first create references `parent`: it makes its table, then waits on this lock to add the key.
    first_body = {
        "tableName": table,
        "columns": [{"columnName": "parent_id", "type": "uuid", "isNullable": True}],
        "foreignKeys": [
            {
                "referenceTable": parent,
                "referenceColumns": [{"sourceColumn": "parent_id", "referenceColumn": "id"}],
            }
        ],
    }
    second_body = {"tableName": table, "columns": [{"columnName": "title", "type": "string"}]}
    with ThreadPoolExecutor(2) as pool:
        with psycopg.connect(database_url) as blocker:  # (let go on leaving, whatever happened)
            blocker.execute(f'lock table public."{parent}" in access exclusive mode')
            first = pool.submit(create, client, admin, first_body)
            wait_for_lock_waiters(sql, 1, table)
            second = pool.submit(create, client, admin, second_body)
            wait_for_lock_waiters(sql, 2, table)  # (the second waits for the first's uncommitted table)
        answers = [first.result(), second.result()]
    assert answers[0].status_code == 201, answers[0].text
    assert answers[1].status_code == 400, answers[1].text
    assert answers[1].json() == {
        "error": "DATABASE_DUPLICATE",
        "message": f"table {table} already exists",
        "statusCode": 400,
        "nextActions": "Choose a unique table name.",
    }
    schema = client.get(f"{TABLES}/{table}/schema", headers=admin).json()
    assert [c["columnName"] for c in schema["columns"]] == ["id", "parent_id", "created_at", "updated_at"]


def _agent() -> Actor:
    key = AgentKey(
        str(uuid.uuid4()), "racer", frozenset({"database:write"}), can_approve=False, expires_at=None
    )
    return Actor(agent_principal(key), tool="delete-table")


def test_an_agents_drop_of_a_table_made_after_the_approval_check_is_held_not_run(
    client: TestClient, admin: dict[str, str], new_name: NewName, sql: Sql
) -> None:
    """The approval gate found no table (so did not hold the call), then someone made it before the drop
    ran: the drop's own transaction finds it and holds the call, as the gate would have."""
    table = new_name("late")
    made = create(client, admin, {"tableName": table, "columns": [{"columnName": "note", "type": "string"}]})
    assert made.status_code == 201, made.text
    assert client.portal is not None
    database = services_of(client).database
    with pytest.raises(HeldForApproval) as held:
        client.portal.call(database.delete_table, _agent(), table)
    assert held.value.reason == f"drops table {table} and its data"
    assert sql("select to_regclass(%s) is not null as found", f"public.{table}")[0]["found"]
    # Once a person approved it, the same call drops the table.
    approved = Actor(_agent().principal, tool="delete-table", approved_request=str(uuid.uuid4()))
    assert client.portal.call(database.delete_table, approved, table)["tableName"] == table
    assert not sql("select to_regclass(%s) is not null as found", f"public.{table}")[0]["found"]


def test_two_drops_of_one_table_at_once_get_one_drop_and_the_not_found_answer(
    client: TestClient, admin: dict[str, str], new_name: NewName, database_url: str, sql: Sql
) -> None:
    """Both drops find the table, then queue on its lock: the second finds it gone once the first let go,
    and answers as a drop of a missing table does, not in Postgres's words."""
    table = new_name("dropped")
    made = create(client, admin, {"tableName": table, "columns": [{"columnName": "note", "type": "string"}]})
    assert made.status_code == 201, made.text

    def drop() -> httpx2.Response:
        return client.delete(f"{TABLES}/{table}", headers=admin)

    with ThreadPoolExecutor(2) as pool:
        with psycopg.connect(database_url) as blocker:
            blocker.execute(f'lock table public."{table}" in access exclusive mode')
            first = pool.submit(drop)
            wait_for_lock_waiters(sql, 1, table)
            second = pool.submit(drop)
            wait_for_lock_waiters(sql, 2, table)
        answers = sorted([first.result(), second.result()], key=lambda answer: answer.status_code)
    assert answers[0].status_code == 200, answers[0].text
    assert answers[1].status_code == 404, answers[1].text
    assert answers[1].json() == {
        "error": "DATABASE_NOT_FOUND",
        "message": "table not found",
        "statusCode": 404,
        "nextActions": f"There is no table {table!r}; list tables with GET /api/database/tables.",
    }
