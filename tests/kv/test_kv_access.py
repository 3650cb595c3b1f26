"""Who reaches which entries of `/api/kv`, as InsForge decides it: a user their own entries only (RLS at the
database, not a filter of the service's); the anon key the project-global store's public entries, read only;
the API key the whole global store; agent keys by `kv:read` and `kv:write`, on REST and MCP alike. The kv
table is not reachable through the records API. End users' writes are not audited."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
from starlette.testclient import TestClient

from kilnbase.identity.principal import CredentialKind, Principal
from tests.kv.entries import put
from tests.support.app import agent_headers, anon_headers, mcp_call, services_of, user_headers


def new_user(client: TestClient) -> tuple[str, dict[str, str]]:
    user_id = str(uuid.uuid4())
    return user_id, user_headers(client, user_id, f"{user_id[:8]}@example.com")


def value_of(client: TestClient, headers: dict[str, str], ns: str, key: str) -> Any:
    response = client.get(f"/api/kv/entries/{ns}/{key}", headers=headers)
    if response.status_code == 404:
        return "absent"
    assert response.status_code == 200, response.text
    return response.json()["value"]


def test_users_have_stores_of_their_own(
    client: TestClient, admin: dict[str, str], ns: str, database_url: str
) -> None:
    a_id, alice = new_user(client)
    _, bob = new_user(client)
    put(client, alice, ns, "prefs", value={"owner": "alice"})
    put(client, bob, ns, "prefs", value={"owner": "bob"})
    put(client, admin, ns, "prefs", value={"owner": "project"})
    assert value_of(client, alice, ns, "prefs") == {"owner": "alice"}
    assert value_of(client, bob, ns, "prefs") == {"owner": "bob"}
    assert value_of(client, admin, ns, "prefs") == {"owner": "project"}

    # Bob's writes touch only his entry, whatever the key.
    assert client.post(f"/api/kv/entries/{ns}/prefs/incr", headers=bob).status_code == 400  # his is no number
    assert client.delete(f"/api/kv/entries/{ns}/prefs", headers=bob).json() == {"deleted": True}
    assert value_of(client, alice, ns, "prefs") == {"owner": "alice"}
    assert value_of(client, admin, ns, "prefs") == {"owner": "project"}
    assert client.delete(f"/api/kv/entries/{ns}/prefs", headers=bob).json() == {"deleted": False}
    cas = client.post(
        f"/api/kv/entries/{ns}/prefs/cas", headers=bob, json={"expected": {"owner": "alice"}, "next": 1}
    )
    assert cas.status_code == 404
    put(client, alice, ns, "only-alice", value=1)
    assert [row["key"] for row in client.get(f"/api/kv/entries/{ns}", headers=bob).json()["keys"]] == []
    assert client.post(
        "/api/kv/mget", headers=bob, json={"namespace": ns, "keys": ["only-alice"]}
    ).json() == {"values": {}}

    # Users' counters are theirs too, and created as the user (RLS's WITH CHECK holds).
    for _ in range(3):
        client.post(f"/api/kv/entries/{ns}/visits/incr", headers=alice)
    assert value_of(client, alice, ns, "visits") == 3
    assert value_of(client, bob, ns, "visits") == "absent"
    written = client.post("/api/kv/mset", headers=bob, json={"namespace": ns, "entries": {"x": 1, "y": 2}})
    assert written.json() == {"count": 2}
    assert value_of(client, admin, ns, "x") == "absent"
    with psycopg.connect(database_url) as conn:
        owners = conn.execute(
            "select key, owner_id::text from kv.entries where namespace = %s and key = 'visits'", (ns,)
        ).fetchall()
    assert owners == [("visits", a_id)]


def test_rls_decides_at_the_database(client: TestClient, admin: dict[str, str], ns: str) -> None:
    """InsForge's policies, read as each role through the request pool: a signed-in user sees their own
    entries, others' `authed` and `public` ones, never others' `private` ones; anon sees only `public`; no
    one changes another's entry, even by SQL that names it."""
    a_id, alice = new_user(client)
    b_id, _ = new_user(client)
    for visibility in ("private", "authed", "public"):
        put(client, alice, ns, visibility, value=visibility, visibility=visibility)
        put(client, admin, ns, f"global-{visibility}", value=visibility, visibility=visibility)
    database = services_of(client).core.database
    bob = Principal(
        "authenticated", CredentialKind.JWT, user_id=b_id, claims={"sub": b_id, "role": "authenticated"}
    )
    anon = Principal("anon", CredentialKind.ANON_KEY, claims={"role": "anon"})

    def seen(principal: Principal) -> list[str]:
        async def read() -> list[str]:
            cur = await database.statement_as_caller(
                principal, "select key from kv.entries where namespace = %s order by key", (ns,)
            )
            return [row["key"] for row in await cur.fetchall()]

        result: list[str] = client.portal.call(read)  # type: ignore[union-attr]
        return result

    assert seen(bob) == ["authed", "global-authed", "global-public", "public"]
    assert seen(anon) == ["global-public", "public"]

    def changed(principal: Principal, statement: str) -> int | str:
        async def write() -> int | str:
            try:
                cur = await database.statement_as_caller(principal, statement, (ns,))
            except psycopg.errors.InsufficientPrivilege:
                return "refused"
            return cur.rowcount

        result: int | str = client.portal.call(write)  # type: ignore[union-attr]
        return result

    assert changed(bob, "update kv.entries set value = '1' where namespace = %s") == 0
    assert changed(bob, "delete from kv.entries where namespace = %s") == 0
    steal = f"insert into kv.entries (owner_id, namespace, key, value) values ('{a_id}', %s, 'x', '1')"
    assert changed(bob, steal) == "refused"
    assert (
        changed(bob, "insert into kv.entries (namespace, key, value) values (%s, 'global-x', '1')")
        == "refused"
    )
    assert changed(anon, "delete from kv.entries where namespace = %s") == "refused"
    assert value_of(client, alice, ns, "private") == "private"


def test_anon_reads_public_global_entries_only(client: TestClient, admin: dict[str, str], ns: str) -> None:
    anon = anon_headers(client)
    for visibility in ("private", "authed", "public"):
        put(client, admin, ns, visibility, value=visibility, visibility=visibility)
    assert value_of(client, anon, ns, "public") == "public"
    assert value_of(client, anon, ns, "authed") == "absent"
    assert value_of(client, anon, ns, "private") == "absent"
    assert [row["key"] for row in client.get(f"/api/kv/entries/{ns}", headers=anon).json()["keys"]] == [
        "public"
    ]
    got = client.post("/api/kv/mget", headers=anon, json={"namespace": ns, "keys": ["public", "private"]})
    assert got.json() == {"values": {"public": "public"}}
    assert client.get(f"/api/kv/entries/{ns}/public/ttl", headers=anon).status_code == 200

    for response in (
        client.put(f"/api/kv/entries/{ns}/public", headers=anon, json={"value": "defaced"}),
        client.put(f"/api/kv/entries/{ns}/new", headers=anon, json={"value": 1}),
        client.delete(f"/api/kv/entries/{ns}/public", headers=anon),
        client.post(f"/api/kv/entries/{ns}/n/incr", headers=anon),
        client.post(f"/api/kv/entries/{ns}/public/cas", headers=anon, json={"expected": "public", "next": 1}),
        client.post(f"/api/kv/entries/{ns}/public/expire", headers=anon, json={"ttl": 1}),
        client.post("/api/kv/mset", headers=anon, json={"namespace": ns, "entries": {"a": 1}}),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "FORBIDDEN"
    assert value_of(client, admin, ns, "public") == "public"
    assert value_of(client, admin, ns, "new") == "absent"


def test_a_signed_in_user_does_not_reach_the_global_store(
    client: TestClient, admin: dict[str, str], ns: str
) -> None:
    """As in InsForge, a user's calls address their own entries: the global store's, even public, are
    another owner's (readable by SQL under RLS, not by this API)."""
    _, alice = new_user(client)
    put(client, admin, ns, "banner", value="hello", visibility="public")
    assert value_of(client, alice, ns, "banner") == "absent"
    put(client, alice, ns, "banner", value="mine")
    assert value_of(client, admin, ns, "banner") == "hello"


def test_user_writes_are_not_audited(client: TestClient, ns: str, database_url: str) -> None:
    _, alice = new_user(client)
    put(client, alice, ns, "k", value=1)
    client.post(f"/api/kv/entries/{ns}/k/incr", headers=alice)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "select count(*) from system.audit_logs where module = 'KV' and details->>'namespace' = %s", (ns,)
        ).fetchone()
    assert row == (0,)


def test_agent_scopes_on_rest_and_mcp(
    client: TestClient, admin: dict[str, str], ns: str, database_url: str
) -> None:
    reader = agent_headers(client, admin, ["kv:read"])
    writer = agent_headers(client, admin, ["kv:write"])
    stranger = agent_headers(client, admin, ["schedules:write"])
    put(client, admin, ns, "flag", value=True)

    assert value_of(client, reader, ns, "flag") is True
    mget = client.post("/api/kv/mget", headers=reader, json={"namespace": ns, "keys": ["flag"]})
    assert mget.status_code == 200 and mget.json() == {"values": {"flag": True}}
    for response in (
        client.put(f"/api/kv/entries/{ns}/flag", headers=reader, json={"value": False}),
        client.post("/api/kv/mset", headers=reader, json={"namespace": ns, "entries": {"a": 1}}),
        client.get(f"/api/kv/entries/{ns}/flag", headers=stranger),
    ):
        assert response.status_code == 403, response.text
    assert put(client, writer, ns, "flag", value=False)["entry"]["value"] is False

    listed = json.loads(mcp_call(client, reader, "list-kv-keys", {"namespace": ns}))
    assert [row["key"] for row in listed["keys"]] == ["flag"]
    got = json.loads(mcp_call(client, reader, "get-kv-value", {"namespace": ns, "key": "flag"}))
    assert got["value"] is False and got["ttl"] > 0
    refused = mcp_call(client, reader, "set-kv-value", {"namespace": ns, "key": "flag", "value": 1})
    assert "kv:write" in refused
    written = json.loads(mcp_call(client, writer, "set-kv-value", {"namespace": ns, "key": "n", "value": 41}))
    assert written["created"] is True
    kept = {"namespace": ns, "key": "kept", "value": "v", "neverExpires": True}
    assert json.loads(mcp_call(client, writer, "set-kv-value", kept))["created"] is True
    assert (
        json.loads(mcp_call(client, writer, "get-kv-value", {"namespace": ns, "key": "kept"}))["ttl"] is None
    )
    both = mcp_call(client, writer, "set-kv-value", {**kept, "ttl": 60})
    assert "give ttl or neverExpires, not both" in both
    counted = json.loads(mcp_call(client, writer, "increment-kv-value", {"namespace": ns, "key": "n"}))
    assert counted == {"value": 42}
    values = json.loads(mcp_call(client, writer, "get-kv-values", {"namespace": ns, "keys": ["n", "flag"]}))
    assert values == {"values": {"n": 42, "flag": False}}
    expired = json.loads(
        mcp_call(client, writer, "expire-kv-key", {"namespace": ns, "key": "n", "ttl": None})
    )
    assert expired == {"updated": True}
    assert json.loads(mcp_call(client, writer, "delete-kv-key", {"namespace": ns, "key": "n"})) == {
        "deleted": True
    }
    bad = mcp_call(client, writer, "get-kv-value", {"namespace": "a/b", "key": "n"})
    assert "Invalid namespace" in bad
    with psycopg.connect(database_url) as conn:
        actors = conn.execute(
            "select action, tool from system.audit_logs where module = 'KV' and details->>'namespace' = %s "
            "and agent_key is not null order by created_at",
            (ns,),
        ).fetchall()
    assert ("INCREMENT_KV_VALUE", "increment-kv-value") in actors
    assert ("SET_KV_ENTRY", None) in actors


def test_the_kv_schema_is_not_reachable_through_records(client: TestClient, admin: dict[str, str]) -> None:
    _, alice = new_user(client)
    for headers in (admin, alice, anon_headers(client)):
        read = client.get("/api/database/records/entries", headers={**headers, "Accept-Profile": "kv"})
        assert read.status_code == 406, read.text
        assert read.json()["code"] == "PGRST106"
        write = client.post(
            "/api/database/records/entries",
            headers={**headers, "Content-Profile": "kv"},
            json={"namespace": "x", "key": "y", "value": 1},
        )
        assert write.status_code == 406
