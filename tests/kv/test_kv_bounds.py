"""A signed-in user's live entries are bounded (`KILNBASE_KV_MAX_USER_ENTRIES`, three here): a write that
would make one more is 409 `KV_LIMIT_EXCEEDED` and stores nothing, by PUT, mset, incr or set-if-absent; a
write to a key the user holds always goes through; an expired entry frees its place; another user, and the
project's own store, are not counted."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.config import KvSettings, Settings
from tests.kv.entries import put
from tests.support.app import user_headers


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data: Path = tmp_path_factory.mktemp("data")
    return Settings(database_url=database_url, data_dir=data, kv=KvSettings(max_user_entries=3))


def a_user(client: TestClient) -> dict[str, str]:
    return user_headers(client, str(uuid.uuid4()), f"{secrets.token_hex(4)}@example.com")


def test_a_user_holds_at_most_the_bound(
    client: TestClient, admin: dict[str, str], ns: str, database_url: str
) -> None:
    alice, bob = a_user(client), a_user(client)
    for key in ("a", "b", "c"):
        put(client, alice, ns, key, value=1)
    refused = client.put(f"/api/kv/entries/{ns}/d", headers=alice, json={"value": 1})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "KV_LIMIT_EXCEEDED"
    for attempt in (
        client.post("/api/kv/mset", headers=alice, json={"namespace": ns, "entries": {"e": 1}}),
        client.post(f"/api/kv/entries/{ns}/f/incr", headers=alice),
        client.put(f"/api/kv/entries/{ns}/g", headers=alice, json={"value": 1, "ifNotExists": True}),
    ):
        assert attempt.status_code == 409, attempt.text
    assert put(client, alice, ns, "a", value=2)["entry"]["value"] == 2  # (a key she holds)
    assert client.post(f"/api/kv/entries/{ns}/b/incr", headers=alice).json() == {"value": 2}
    put(client, bob, ns, "a", value=1)  # (another user's entries are his own count)
    for key in ("p", "q", "r", "s"):
        put(client, admin, ns, key, value=1)  # (the project's store is not bounded per user)
    with psycopg.connect(database_url) as conn:
        keys = conn.execute(
            "select key from kv.entries where namespace = %s and owner_id is not null "
            "and key in ('d', 'e', 'f', 'g')",
            (ns,),
        ).fetchall()
        assert keys == []
        # An entry past its expiry no longer counts.
        conn.execute(
            "update kv.entries set expires_at = now() - interval '1 second' "
            "where namespace = %s and key = 'c' and owner_id is not null and value = '1'",
            (ns,),
        )
    put(client, alice, ns, "d", value=1)
