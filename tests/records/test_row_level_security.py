"""Row Level Security through the records API: anon, two users with JWTs, and the admin key.

Nobody sees or changes what a policy forbids, whether through records, rpc, embeds or counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.support.app import services_of

RECORDS = "/api/database/records"
ALICE = str(uuid.uuid4())
BOB = str(uuid.uuid4())


@pytest.fixture(scope="module", autouse=True)
def owned_tables(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE TABLE todos (
                id serial PRIMARY KEY,
                owner uuid NOT NULL DEFAULT auth.uid(),
                title text NOT NULL,
                is_public boolean NOT NULL DEFAULT false
            );
            CREATE POLICY todos_read ON todos FOR SELECT TO anon, authenticated
                USING (is_public OR owner = auth.uid());
            CREATE POLICY todos_insert ON todos FOR INSERT TO authenticated WITH CHECK (owner = auth.uid());
            CREATE POLICY todos_update ON todos FOR UPDATE TO authenticated
                USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
            CREATE POLICY todos_delete ON todos FOR DELETE TO authenticated USING (owner = auth.uid());
            CREATE TABLE todo_steps (
                id serial PRIMARY KEY, todo_id int NOT NULL REFERENCES todos (id), body text
            );
            CREATE POLICY steps_read ON todo_steps FOR SELECT TO anon, authenticated
                USING (EXISTS (SELECT 1 FROM todos WHERE todos.id = todo_id));
            CREATE FUNCTION visible_todo_count() RETURNS bigint LANGUAGE sql STABLE
                AS 'SELECT count(*) FROM todos';
            """
        )
        conn.execute(
            "INSERT INTO todos (owner, title, is_public) VALUES (%s, 'alice private', false), "
            "(%s, 'alice public', true), (%s, 'bob private', false)",
            (ALICE, ALICE, BOB),
        )
        conn.execute(
            "INSERT INTO todo_steps (todo_id, body) VALUES (1, 'a1 step'), (2, 'a2 step'), (3, 'b step')"
        )


def user(client: TestClient, sub: str, email: str) -> dict[str, str]:
    tokens = services_of(client).core.tokens
    token = tokens.sign({"sub": sub, "role": "authenticated", "email": email})
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def alice(client: TestClient) -> dict[str, str]:
    return user(client, ALICE, "alice@example.com")


@pytest.fixture(scope="module")
def bob(client: TestClient) -> dict[str, str]:
    return user(client, BOB, "bob@example.com")


def titles(
    client: TestClient, headers: dict[str, str], query: str = "todos?select=title&order=id"
) -> list[str]:
    response = client.get(f"{RECORDS}/{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [row["title"] for row in response.json()]


def test_each_caller_sees_only_what_the_policy_allows(
    client: TestClient,
    anon: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
    admin: dict[str, str],
) -> None:
    assert titles(client, anon) == ["alice public"]
    assert titles(client, alice) == ["alice private", "alice public"]
    assert titles(client, bob) == ["alice public", "bob private"]
    assert titles(client, admin) == ["alice private", "alice public", "bob private"]


def test_counts_respect_policies(client: TestClient, bob: dict[str, str], anon: dict[str, str]) -> None:
    response = client.get(f"{RECORDS}/todos?select=id", headers={**bob, "Prefer": "count=exact"})
    assert response.headers["content-range"] == "0-1/2"
    response = client.head(f"{RECORDS}/todos", headers={**anon, "Prefer": "count=exact"})
    assert response.headers["content-range"] == "0-0/1"


def test_embeds_respect_policies(client: TestClient, bob: dict[str, str], anon: dict[str, str]) -> None:
    steps = client.get(f"{RECORDS}/todo_steps?select=body,todos(title)&order=id", headers=bob).json()
    assert steps == [
        {"body": "a2 step", "todos": {"title": "alice public"}},
        {"body": "b step", "todos": {"title": "bob private"}},
    ]
    todos = client.get(f"{RECORDS}/todos?select=title,todo_steps(body)", headers=anon).json()
    assert todos == [{"title": "alice public", "todo_steps": [{"body": "a2 step"}]}]


def test_rpc_runs_as_the_caller(
    client: TestClient, anon: dict[str, str], alice: dict[str, str], admin: dict[str, str]
) -> None:
    rpc = "/api/database/rpc/visible_todo_count"
    assert client.get(rpc, headers=anon).json() == 1
    assert client.get(rpc, headers=alice).json() == 2
    assert client.get(rpc, headers=admin).json() == 3


def test_anon_cannot_write(client: TestClient, anon: dict[str, str]) -> None:
    response = client.post(f"{RECORDS}/todos", headers=anon, json={"title": "spam"})
    assert response.status_code == 401
    assert response.json()["code"] == "42501"


@pytest.fixture
def bobs_writes(database_url: str) -> Iterator[None]:
    """What the write test adds is gone after it, so the read tests see the fixture's rows in any order."""
    yield
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM todos WHERE owner = %s AND title <> 'bob private'", (BOB,))


def test_users_write_only_their_own_rows(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], bobs_writes: None
) -> None:
    created = client.post(
        f"{RECORDS}/todos?select=title,owner",
        headers={**bob, "Prefer": "return=representation"},
        json={"title": "bob new"},
    )
    assert created.status_code == 201, created.text
    assert created.json() == [{"title": "bob new", "owner": BOB}]
    forged = client.post(f"{RECORDS}/todos", headers=bob, json={"title": "as alice", "owner": ALICE})
    assert forged.status_code == 403
    assert forged.json()["code"] == "42501"
    update = client.patch(f"{RECORDS}/todos?title=eq.alice private", headers=bob, json={"title": "hacked"})
    assert update.status_code == 204
    assert update.headers["content-range"] == "*/*"
    delete = client.delete(f"{RECORDS}/todos?owner=eq.{ALICE}", headers=bob)
    assert delete.status_code == 204
    assert titles(client, alice) == ["alice private", "alice public"]
    own = client.patch(f"{RECORDS}/todos?title=eq.bob new", headers=bob, json={"title": "bob renamed"})
    assert own.headers["content-range"] == "0-0/*"


def test_expired_or_forged_tokens_are_refused(client: TestClient) -> None:
    tokens = services_of(client).core.tokens
    expired = tokens.sign({"sub": ALICE, "role": "authenticated"}, expires_in=-60)
    response = client.get(f"{RECORDS}/todos", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    forged: Any = client.get(f"{RECORDS}/todos", headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."})
    assert forged.status_code == 401
