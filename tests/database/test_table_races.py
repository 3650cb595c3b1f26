"""Two requests on one table at once: each gets the answer it would get alone.

The interleavings are driven, not hoped for: a side connection holds a lock that one request must take, and
the test waits until the requests are queued on it (`pg_stat_activity`) before it lets go."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import psycopg
import pytest
from starlette.testclient import TestClient

from tests.database.conftest import NewName
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
