"""`Idempotency-Key` on mutating routes: a retry returns the first response without running again; the same
key with another request, or while the first still runs, is refused; keys belong to one credential."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.db.idempotency import request_digest
from kilnbase.identity.principal import API_KEY_HOLDER
from kilnbase.keys.secret_box import SecretBox
from tests.support.app import admin_headers, anon_headers, mcp_call

Headers = dict[str, str]


@pytest.fixture(scope="module")
def admin(client: TestClient) -> Headers:
    return admin_headers(client)


def keyed(headers: Headers, key: str | None = None) -> Headers:
    return {**headers, "Idempotency-Key": key or secrets.token_hex(8)}


def table(name: str | None = None) -> dict[str, Any]:
    return {
        "tableName": name or f"idem_{secrets.token_hex(4)}",
        "columns": [{"columnName": "title", "type": "string", "isNullable": True}],
        "rlsEnabled": False,
    }


def test_a_retry_gets_the_first_response_and_runs_nothing(client: TestClient, admin: Headers) -> None:
    headers = keyed(admin)
    body = table()
    first = client.post("/api/database/tables", headers=headers, json=body)
    again = client.post("/api/database/tables", headers=headers, json=body)
    assert first.status_code == 201
    assert again.status_code == 201  # without the key, a second create is refused: the table exists
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    unkeyed = client.post("/api/database/tables", headers=admin, json=body)
    assert unkeyed.status_code == 400
    assert "already exists" in unkeyed.json()["message"]


def test_rows_inserted_once_however_often_the_insert_is_retried(client: TestClient, admin: Headers) -> None:
    body = table()
    assert client.post("/api/database/tables", headers=admin, json=body).status_code == 201
    path = f"/api/database/records/{body['tableName']}"
    headers = keyed({**admin, "Prefer": "return=representation"})
    responses = [client.post(path, headers=headers, json={"title": "once"}) for _ in range(3)]
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()[0]["id"] for r in responses}) == 1
    assert len(client.get(path, headers=admin).json()) == 1


def test_the_same_key_with_another_request_is_409_and_changes_nothing(
    client: TestClient, admin: Headers
) -> None:
    headers = keyed(admin)
    assert client.post("/api/database/tables", headers=headers, json=table()).status_code == 201
    other = table()
    refused = client.post("/api/database/tables", headers=headers, json=other)
    assert refused.status_code == 409
    assert refused.json()["error"] == "IDEMPOTENCY_KEY_REUSED"
    assert other["tableName"] not in client.get("/api/database/tables", headers=admin).json()


def test_a_client_error_is_kept_and_replayed_too(client: TestClient, admin: Headers) -> None:
    headers = keyed(admin)
    bad = {"tableName": "x", "columns": "not a list"}
    first = client.post("/api/database/tables", headers=headers, json=bad)
    again = client.post("/api/database/tables", headers=headers, json=bad)
    assert first.status_code == again.status_code == 400
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"


def test_keys_belong_to_one_credential(client: TestClient, admin: Headers) -> None:
    key = secrets.token_hex(8)
    assert client.post("/api/database/tables", headers=keyed(admin, key), json=table()).status_code == 201
    other = client.post("/api/database/tables", headers=keyed(anon_headers(client), key), json=table())
    assert other.status_code == 401  # ran (and was refused as anon), not replayed nor 409
    assert "idempotent-replayed" not in other.headers


@pytest.mark.parametrize("key", [b"x" * 256, b"tab\there", "ключ".encode()])
def test_a_malformed_key_is_400(client: TestClient, admin: Headers, key: bytes) -> None:
    body = table()
    headers: dict[str, Any] = {**admin, "Idempotency-Key": key}
    response = client.post("/api/database/tables", headers=headers, json=body)
    assert response.status_code == 400
    assert body["tableName"] not in client.get("/api/database/tables", headers=admin).json()


def test_a_retry_while_the_first_call_runs_is_409_with_retry_after(
    client: TestClient, admin: Headers, database_url: str
) -> None:
    key = secrets.token_hex(8)
    body = {"query": "select pg_sleep(1.5) as slept"}
    first: dict[str, Any] = {}

    def run_first() -> None:
        first["response"] = client.post("/api/database/advance/rawsql", headers=keyed(admin, key), json=body)

    thread = threading.Thread(target=run_first)
    thread.start()
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the first call holds the key
            if conn.execute("select 1 from system.idempotency_keys where key = %s", (key,)).fetchone():
                break
            time.sleep(0.02)
    second = client.post("/api/database/advance/rawsql", headers=keyed(admin, key), json=body)
    thread.join()
    assert second.status_code == 409
    assert second.json()["error"] == "IDEMPOTENCY_KEY_IN_USE"
    assert second.headers["retry-after"] == "1"
    assert first["response"].status_code == 200
    third = client.post("/api/database/advance/rawsql", headers=keyed(admin, key), json=body)
    assert third.headers["idempotent-replayed"] == "true"


def test_a_cookie_session_is_never_replayed_to_another_anonymous_caller(client: TestClient) -> None:
    """A web client refreshes with its httpOnly cookie and the anon key (or no credential), which every
    other anonymous caller shares: the cookie is part of whose key it is, so knowing the victim's
    Idempotency-Key gets an attacker no session."""
    anon = anon_headers(client)
    email = f"idem-{secrets.token_hex(4)}@example.com"
    account = {"email": email, "password": "Passw0rd!long"}
    signed_up = client.post("/api/auth/users", headers=anon, json=account)
    assert signed_up.status_code == 200, signed_up.text
    key = secrets.token_hex(8)
    victim = client.post(
        "/api/auth/refresh", headers={**keyed(anon, key), "X-CSRF-Token": signed_up.json()["csrfToken"]}
    )
    assert victim.status_code == 200 and victim.json()["accessToken"]
    client.cookies.clear()  # the attacker: the same key and (empty) body, without the victim's cookie
    for headers in (keyed(anon, key), {"Idempotency-Key": key}):
        attacker = client.post("/api/auth/refresh", headers=headers)
        assert attacker.status_code == 401, attacker.text
        assert "idempotent-replayed" not in attacker.headers
        assert attacker.json()["error"] == "AUTH_UNAUTHORIZED"
        assert attacker.headers.get("set-cookie", "").startswith('insforge_refresh_token=""')  # cleared


def test_a_kept_response_does_not_keep_the_secret_it_shows(
    client: TestClient, admin: Headers, database_url: str
) -> None:
    """A new agent key is shown once and only its SHA-256 is kept: the response a retry replays is kept
    sealed with the project's encryption key, so the store (and every database backup) holds no usable
    secret, and the retry still gets the key."""
    headers = keyed(admin)
    body = {"name": f"sealed-{secrets.token_hex(3)}", "scopes": ["database:read"]}
    first = client.post("/api/agents/keys", headers=headers, json=body)
    again = client.post("/api/agents/keys", headers=headers, json=body)
    assert first.status_code == again.status_code == 201, first.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    secret = first.json()["key"]
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select convert_from(body, 'LATIN1') || coalesce(headers::text, '') from system.idempotency_keys"
        ).fetchall()
    assert rows and not [row for row in rows if secret in row[0]]


def test_a_response_kept_in_the_clear_by_an_older_server_still_replays(
    client: TestClient, admin: Headers, database_url: str
) -> None:
    """Several API processes upgraded one by one: a response an older process kept (headers and body in the
    clear) is replayed by a newer one."""
    key = secrets.token_hex(8)
    body = b'{"query":"select 1"}'
    path = "/api/database/advance/rawsql"
    digest = request_digest(b"POST", path.encode(), b"", body)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "insert into system.idempotency_keys (owner, key, request_sha256, status, headers, body) "
            "values (%s, %s, %s, 200, %s::jsonb, %s)",
            (
                API_KEY_HOLDER.credential_id,
                key,
                digest,
                '[["content-type", "application/json"]]',
                b'{"kept": "by an older server"}',
            ),
        )
    replayed = client.post(
        path, headers={**keyed(admin, key), "Content-Type": "application/json"}, content=body
    )
    assert replayed.status_code == 200
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == {"kept": "by an older server"}


def reseal(database_url: str, key: str) -> None:
    """Seal the response kept under `key` with another encryption key, as a server whose ENCRYPTION_KEY
    changed since finds it."""
    other_box = SecretBox(secrets.token_bytes(32))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "update system.idempotency_keys set body = %s where key = %s",
            (other_box.encrypt("{}", context="idempotency").encode(), key),
        )


def test_a_response_sealed_with_another_encryption_key_is_409_and_runs_nothing(
    client: TestClient, admin: Headers, database_url: str
) -> None:
    """After ENCRYPTION_KEY changed, a kept response cannot be opened: its retry is told so, and the
    request, which did run, does not run a second time (here: no second agent key)."""
    key = secrets.token_hex(8)
    name = f"lost-{secrets.token_hex(3)}"
    body = {"name": name, "scopes": ["database:read"]}
    assert client.post("/api/agents/keys", headers=keyed(admin, key), json=body).status_code == 201
    reseal(database_url, key)
    retried = client.post("/api/agents/keys", headers=keyed(admin, key), json=body)
    assert retried.status_code == 409, retried.text
    assert retried.json()["error"] == "IDEMPOTENCY_RESPONSE_LOST"
    listed = client.get("/api/agents/keys", headers=admin).json()
    assert [k["name"] for k in listed if k["name"] == name] == [name]


def test_a_tool_result_sealed_with_another_encryption_key_is_told_and_not_run_again(
    client: TestClient, admin: Headers, database_url: str
) -> None:
    key = secrets.token_hex(8)
    call: dict[str, object] = {
        "query": f"create table lost_{secrets.token_hex(4)} (id int)",
        "idempotencyKey": key,
    }
    first = mcp_call(client, admin, "run-raw-sql", call)
    assert not first.startswith("Error"), first
    reseal(database_url, f"mcp:{key}")
    again = mcp_call(client, admin, "run-raw-sql", call)  # run again, it would say the table exists
    assert "IDEMPOTENCY_RESPONSE_LOST" in again and "already exists" not in again
