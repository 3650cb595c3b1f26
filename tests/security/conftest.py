"""Security tests: the app over a fresh database, its callers, and the owner's own connection (for setting up
what an attacker would find, and for checking what they could not change)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from starlette.testclient import TestClient

from tests.support.app import admin_headers, anon_headers

OwnerSql = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


@pytest.fixture(scope="module")
def anon(client: TestClient) -> dict[str, str]:
    return anon_headers(client)


@pytest.fixture(scope="module")
def owner_sql(database_url: str) -> OwnerSql:
    """Run SQL as the database owner (the superuser), outside the app; returns the rows, if any."""

    def run(query: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []

    return run


def admin_table(client: TestClient, admin: dict[str, str], prefix: str, notes: list[str]) -> str:
    """A new table of project_admin's, `(id int primary key, note text)`, with one row per note (ids from
    1); its name."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    values = ", ".join(f"({number}, '{note}')" for number, note in enumerate(notes, 1))
    query = (
        f"create table public.{name} (id int primary key, note text); "
        f"insert into public.{name} values {values}"
    )
    made = client.post("/api/database/advance/rawsql", headers=admin, json={"query": query})
    assert made.status_code == 200, made.text
    return name


def table_notes(owner_sql: OwnerSql, table: str) -> list[tuple[object, object]]:
    """The rows of an `admin_table`, as (id, note), by id."""
    return [(row["id"], row["note"]) for row in owner_sql(f"select id, note from public.{table} order by id")]


#: An `admin_table` of three notes worth keeping, as `table_notes` reads it.
KEPT = [(1, "keep"), (2, "keep"), (3, "keep")]


@pytest.fixture
def three_rows(client: TestClient, admin: dict[str, str]) -> str:
    """A table of project_admin's with three rows worth keeping (`KEPT`), new for each test."""
    return admin_table(client, admin, "rows", ["keep"] * 3)


def assert_forbidden(response: Any, words: str, next_action: str) -> None:
    """A 403 in InsForge's shape (`FORBIDDEN`) whose message says `words` and whose next action names
    `next_action`."""
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "FORBIDDEN" and words in body["message"], body
    assert next_action in body["nextActions"], body
