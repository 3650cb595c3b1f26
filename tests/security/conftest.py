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
