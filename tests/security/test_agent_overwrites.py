"""No door around approvals by overwriting: what an agent key cannot delete without a person, it cannot lose
by writing over it either (a stored file, a secret's value, every row of a table), and it cannot mint a
credential that spends the project's money."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from tests.security.conftest import KEPT, OwnerSql, assert_forbidden, table_notes
from tests.support.app import agent_headers, mcp_call


def audited(owner_sql: OwnerSql, action: str, agent: str) -> list[dict[str, object]]:
    """The audit entries of `action` by agent keys named like `agent`."""
    return owner_sql(
        "select outcome, details from system.audit_logs where action = %s and actor like %s order by id",
        action,
        f"agent:{agent}-%",
    )


def test_an_agent_cannot_mint_a_gateway_key(
    client: TestClient, admin: dict[str, str], owner_sql: OwnerSql
) -> None:
    """A gateway key spends the project's money and outlives the agent key that made it, as a session token
    minted from a session token would; `ai:write` (which an agent needs to call models at all) does not
    reach it, over REST or `/mcp`. A person still mints keys, and the agent may list and revoke them."""
    agent = agent_headers(client, admin, ["ai:write"], "spender")
    refused = client.post("/api/ai/gateway/keys", headers=agent, json={"name": "mine"})
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert body["error"] == "FORBIDDEN" and "cannot create gateway keys" in body["message"]
    assert "person" in body["nextActions"]
    tool = mcp_call(client, agent, "create-gateway-key", {"name": "mine-too"})
    assert "cannot create gateway keys" in tool and "kbk_" not in tool
    names = [key["name"] for key in client.get("/api/ai/gateway/keys", headers=admin).json()]
    assert "mine" not in names and "mine-too" not in names
    refusals = audited(owner_sql, "CREATE_GATEWAY_KEY", "spender")
    assert [entry["outcome"] for entry in refusals] == ["refused", "refused"]

    made = client.post("/api/ai/gateway/keys", headers=admin, json={"name": "app"})
    assert made.status_code == 201, made.text  # a person's key, as before
    listed = client.get("/api/ai/gateway/keys", headers=agent)
    assert listed.status_code == 200 and "app" in [key["name"] for key in listed.json()]
    revoked = client.delete(f"/api/ai/gateway/keys/{made.json()['id']}", headers=agent)
    assert revoked.status_code == 200, revoked.text


def secret_value(client: TestClient, admin: dict[str, str], key: str) -> object:
    return client.get(f"/api/secrets/{key}", headers=admin).json().get("value")


def test_an_agent_cannot_overwrite_a_secrets_value(
    client: TestClient, admin: dict[str, str], owner_sql: OwnerSql
) -> None:
    """Switching a secret off is refused to an agent (deleting it waits for a person); writing a new value
    over it loses more, the old value for good, and is refused too, whether by `PUT` or by creating a
    deleted secret's key again (which would revive it with the new value). A new key still works."""
    agent = agent_headers(client, admin, ["secrets:write"], "rotator")
    key = f"KEEP_{secrets.token_hex(4).upper()}"
    assert client.post("/api/secrets", headers=admin, json={"key": key, "value": "v1"}).status_code == 201

    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    for change in ({"value": "v2"}, {"value": "v2", "expiresAt": later}):
        refused = client.put(f"/api/secrets/{key}", headers=agent, json=change)
        assert refused.status_code == 403, refused.text
        body = refused.json()
        assert body["error"] == "FORBIDDEN" and "overwrite a secret's value" in body["message"]
        assert "POST /api/secrets" in body["nextActions"]
    assert secret_value(client, admin, key) == "v1"
    listed = client.get("/api/secrets", headers=admin).json()["secrets"]
    assert [s["expiresAt"] for s in listed if s["key"] == key] == [None]  # nothing of the PUT ran

    assert client.delete(f"/api/secrets/{key}", headers=admin).status_code == 200  # a person's soft delete
    revived = client.post("/api/secrets", headers=agent, json={"key": key, "value": "v3"})
    assert revived.status_code == 403, revived.text
    assert "keeps its old value" in revived.json()["message"]
    tool = mcp_call(client, agent, "create-secret", {"key": key, "secretValue": "v4"})
    assert "keeps its old value" in tool
    switched_on = client.put(f"/api/secrets/{key}", headers=admin, json={"isActive": True})
    assert switched_on.status_code == 200, switched_on.text
    assert secret_value(client, admin, key) == "v1"  # the kept value, untouched

    refusals = audited(owner_sql, "UPDATE_SECRET", "rotator") + audited(owner_sql, "CREATE_SECRET", "rotator")
    assert [entry["outcome"] for entry in refusals] == ["refused"] * 4

    fresh = f"NEW_{secrets.token_hex(4).upper()}"
    made = client.post("/api/secrets", headers=agent, json={"key": fresh, "value": "v2"})
    assert made.status_code == 201, made.text  # the lossless way: the new value under a new key
    assert client.put(f"/api/secrets/{key}", headers=admin, json={"value": "v2"}).status_code == 200
    assert secret_value(client, admin, key) == "v2"  # a person overwrites, as before


@pytest.mark.parametrize("method", ["DELETE", "PATCH"])
@pytest.mark.parametrize(
    ("query", "prefer"),
    [
        ("id=not.is.null", None),
        ("id=gte.0", None),
        ("or=(id.lt.2,id.gte.2)", None),
        ("note=eq.keep", "return=representation"),
    ],
    ids=["not-null", "gte-zero", "or-both-halves", "representation"],
)
def test_an_agents_filter_that_matches_every_row_is_refused(
    client: TestClient,
    admin: dict[str, str],
    three_rows: str,
    owner_sql: OwnerSql,
    method: str,
    query: str,
    prefer: str | None,
) -> None:
    """The unfiltered PATCH or DELETE is refused to an agent; a filter that happens to match every row is
    the same write, and is rolled back and refused the same way, whatever the filter says."""
    agent = agent_headers(client, admin, ["records:write"], "wiper")
    headers = {**agent, **({"Prefer": prefer} if prefer else {})}
    body = {"note": "gone"} if method == "PATCH" else None
    records = f"/api/database/records/{three_rows}"
    refused = client.request(method, f"{records}?{query}", headers=headers, json=body)
    assert_forbidden(refused, "matched all 3 rows", "run-raw-sql")
    assert table_notes(owner_sql, three_rows) == KEPT


def test_an_agents_filter_that_leaves_a_row_runs(
    client: TestClient, admin: dict[str, str], three_rows: str, owner_sql: OwnerSql
) -> None:
    """Only all the rows of a table of more than one are refused: two of three, then the last two, then a
    table's only row, each run at once; people keep PostgREST's writes."""
    agent = agent_headers(client, admin, ["records:write"], "tidier")
    records = f"/api/database/records/{three_rows}"
    patched = client.patch(f"{records}?id=lte.2", headers=agent, json={"note": "seen"})
    assert patched.status_code == 204, patched.text
    assert table_notes(owner_sql, three_rows) == [(1, "seen"), (2, "seen"), (3, "keep")]
    deleted = client.delete(f"{records}?id=eq.3", headers=agent)
    assert deleted.status_code == 204, deleted.text
    both = client.delete(f"{records}?id=gte.0", headers=agent)
    assert both.status_code == 403, both.text  # now every row of a table of two
    assert client.delete(f"{records}?id=eq.2", headers=agent).status_code == 204
    only = client.patch(f"{records}?id=gte.0", headers=agent, json={"note": "last"})
    assert only.status_code == 204, only.text  # a table's only row: what a filter naming one row changes
    assert table_notes(owner_sql, three_rows) == [(1, "last")]
    none = client.delete(f"{records}?id=gt.100", headers=agent)
    assert none.status_code == 204, none.text

    client.post(records, headers=admin, json=[{"id": 2, "note": "x"}, {"id": 3, "note": "y"}])
    person = client.patch(f"{records}?id=not.is.null", headers=admin, json={"note": "all"})
    assert person.status_code == 204, person.text
    assert table_notes(owner_sql, three_rows) == [(1, "all"), (2, "all"), (3, "all")]


def stored_bytes(client: TestClient, admin: dict[str, str], bucket: str, key: str) -> bytes:
    got = client.get(f"/api/storage/buckets/{bucket}/objects/{key}", headers=admin)
    assert got.status_code == 200, got.text
    return got.content


@pytest.fixture
def kept_file(client: TestClient, admin: dict[str, str]) -> tuple[str, str]:
    """A bucket holding `docs/a.txt`, worth keeping; (bucket, key)."""
    bucket = f"keep-{secrets.token_hex(4)}"
    made = client.post("/api/storage/buckets", headers=admin, json={"bucketName": bucket, "isPublic": False})
    assert made.status_code == 201, made.text
    stored = client.put(
        f"/api/storage/buckets/{bucket}/objects/docs/a.txt",
        headers=admin,
        files={"file": ("a.txt", b"keep", "text/plain")},
    )
    assert stored.status_code == 200, stored.text
    return bucket, "docs/a.txt"


def test_an_agent_replacing_a_stored_file_waits_for_approval(
    client: TestClient, admin: dict[str, str], kept_file: tuple[str, str]
) -> None:
    """Deleting a stored file waits for a person; uploading over it loses its bytes just the same, and waits
    too, over REST (held as `upload-object`) and `/mcp`. Uploads to new keys run at once, and an approval
    stores exactly the bytes the agent sent."""
    bucket, key = kept_file
    agent = agent_headers(client, admin, ["storage:write"], "uploader")
    objects = f"/api/storage/buckets/{bucket}/objects"
    held = client.put(
        f"{objects}/{key}", headers=agent, files={"file": ("a.txt", b"new bytes", "text/plain")}
    )
    assert held.status_code == 202, held.text
    assert held.json()["status"] == "pending_approval" and f"replaces object {key}" in held.json()["reason"]
    raw = client.put(f"{objects}/{key}", headers={**agent, "Content-Type": "text/plain"}, content=b"raw")
    assert raw.status_code == 202, raw.text
    tool = mcp_call(client, agent, "upload-object", {"bucketName": bucket, "key": key, "text": "tool"})
    assert "pending_approval" in tool
    assert stored_bytes(client, admin, bucket, key) == b"keep"

    fresh = client.put(f"{objects}/new.txt", headers=agent, files={"file": ("n.txt", b"n", "text/plain")})
    assert fresh.status_code == 200, fresh.text  # a new key: nothing is lost
    made = mcp_call(client, agent, "upload-object", {"bucketName": bucket, "key": "new2.txt", "text": "n"})
    assert "pending_approval" not in made and stored_bytes(client, admin, bucket, "new2.txt") == b"n"

    approved = client.post(f"/api/approvals/{held.json()['changeRequestId']}/approve", headers=admin, json={})
    assert approved.status_code == 200 and approved.json()["status"] == "done", approved.text
    assert stored_bytes(client, admin, bucket, key) == b"new bytes"
    person = client.put(f"{objects}/{key}", headers=admin, files={"file": ("a.txt", b"mine", "text/plain")})
    assert person.status_code == 200, person.text  # a person replaces at once, as before
    assert stored_bytes(client, admin, bucket, key) == b"mine"


def test_an_agents_sql_that_rewrites_a_stored_files_row_waits_for_approval(
    client: TestClient, admin: dict[str, str], kept_file: tuple[str, str]
) -> None:
    """An upsert (`INSERT ... ON CONFLICT DO UPDATE`) is an UPDATE of the rows it conflicts with: over
    `storage.objects` it points a file at other bytes (or none), which loses the old ones as a delete
    does, so it waits for a person as an UPDATE of Kilnbase's own rows does."""
    bucket, key = kept_file
    agent = agent_headers(client, admin, ["database:write"], "upserter")
    query = (
        (
            "INSERT INTO storage.objects (bucket, key, size) VALUES (%s, %s, 0) "
            "ON CONFLICT (bucket, key) DO UPDATE SET blob_id = gen_random_uuid(), size = 0"
        )
        .replace("%s", "'{}'")
        .format(bucket, key)
    )
    held = client.post("/api/database/advance/rawsql", headers=agent, json={"query": query})
    assert held.status_code == 202, held.text
    assert "storage.objects" in held.json()["reason"]
    assert stored_bytes(client, admin, bucket, key) == b"keep"


def test_an_agents_replacement_that_cannot_wait_is_refused(
    client: TestClient, admin: dict[str, str], kept_file: tuple[str, str]
) -> None:
    """A resumable upload's bytes arrive in later requests, and a held upload carries at most 4 MB: over an
    existing file, both are refused to an agent before any byte is taken, and the file is kept."""
    bucket, key = kept_file
    agent = agent_headers(client, admin, ["storage:write"], "resumer")
    metadata = f"key {base64.b64encode(key.encode()).decode()}"
    tus = client.post(
        f"/api/storage/buckets/{bucket}/tus",
        headers={**agent, "Tus-Resumable": "1.0.0", "Upload-Length": "3", "Upload-Metadata": metadata},
    )
    assert tus.status_code == 403, tus.text
    assert tus.json()["error"] == "FORBIDDEN" and "may not replace object" in tus.json()["message"]
    big = b"x" * (4 * 1024 * 1024 + 1)
    too_large = client.put(
        f"/api/storage/buckets/{bucket}/objects/{key}", headers=agent, files={"file": ("a.txt", big)}
    )
    assert too_large.status_code == 403, too_large.text
    assert "at most 4 MB" in too_large.json()["message"]
    assert "Delete the object first" in too_large.json()["nextActions"]
    assert stored_bytes(client, admin, bucket, key) == b"keep"
    pending = client.get("/api/approvals", headers=admin).json()
    assert not [r for r in pending if r["arguments"].get("bucketName") == bucket]  # nothing to approve


def test_a_held_upload_is_listed_by_its_size_and_hash(
    client: TestClient, admin: dict[str, str], kept_file: tuple[str, str]
) -> None:
    """A held upload keeps its file (up to 4 MB, as base64) in the change request; lists, the agent's polls
    and the decisions show the file's size and SHA-256 instead of its bytes, and `GET /api/approvals/:id`
    shows the call in full. Approved, it stores exactly the bytes that were held."""
    bucket, key = kept_file
    agent = agent_headers(client, admin, ["storage:write"], "bulky")
    data = secrets.token_bytes(3 * 1024 * 1024)
    digest, encoded = hashlib.sha256(data).hexdigest(), base64.b64encode(data).decode()
    objects = f"/api/storage/buckets/{bucket}/objects"
    held = client.put(f"{objects}/{key}", headers=agent, files={"file": ("a.bin", data, "application/pdf")})
    assert held.status_code == 202, held.text
    request_id = held.json()["changeRequestId"]
    text_call = mcp_call(
        client, agent, "upload-object", {"bucketName": bucket, "key": key, "text": "tool text"}
    )
    text_id = json.loads(text_call)["changeRequestId"]
    garbled: dict[str, object] = {"bucketName": bucket, "key": key, "base64Data": "not base64!"}
    garbled_id = json.loads(mcp_call(client, agent, "upload-object", garbled))["changeRequestId"]

    file = {"argument": "base64Data", "bytes": len(data), "sha256": digest}
    listed = client.get("/api/approvals?status=pending", headers=admin)
    assert listed.status_code == 200 and encoded[:100] not in listed.text, listed.text[:500]
    entries = {entry["id"]: entry for entry in listed.json()}
    assert entries[request_id]["arguments"] == {
        "bucketName": bucket,
        "key": key,
        "contentType": "application/pdf",
    }
    assert entries[request_id]["file"] == file
    text_file = {"argument": "text", "bytes": 9, "sha256": hashlib.sha256(b"tool text").hexdigest()}
    assert entries[text_id]["file"] == text_file and "text" not in entries[text_id]["arguments"]
    assert entries[garbled_id]["file"] == {"argument": "base64Data", "bytes": None, "sha256": None}
    polls: list[tuple[str, dict[str, object]]] = [
        ("list-change-requests", {"status": "pending"}),
        ("get-change-request", {"changeRequestId": request_id}),
    ]
    for tool, arguments in polls:
        shown = mcp_call(client, agent, tool, arguments)
        assert digest in shown and encoded[:100] not in shown and len(shown) < 10_000, shown[:500]

    one = client.get(f"/api/approvals/{request_id}", headers=admin)
    assert one.status_code == 200 and one.json()["arguments"]["base64Data"] == encoded
    assert one.json()["file"] == file
    approved = client.post(f"/api/approvals/{request_id}/approve", headers=admin, json={})
    assert approved.status_code == 200 and approved.json()["status"] == "done", approved.text[:500]
    assert "base64Data" not in approved.json()["arguments"] and approved.json()["file"] == file
    assert stored_bytes(client, admin, bucket, key) == data
    rejected = client.post(f"/api/approvals/{text_id}/reject", headers=admin, json={})
    assert rejected.status_code == 200 and rejected.json()["file"] == text_file, rejected.text
    assert stored_bytes(client, admin, bucket, key) == data


def test_a_held_uploads_size_and_hash_are_stored_as_it_is_held(
    client: TestClient, admin: dict[str, str], kept_file: tuple[str, str], owner_sql: OwnerSql
) -> None:
    """The file's size and SHA-256 are worked out once, when the call is held, and kept with the request:
    listing (up to 200 requests of up to 4 MB each) reads them instead of decoding and hashing every file
    again. A request held by a server from before they were kept (none stored) is listed the same."""
    bucket, key = kept_file
    agent = agent_headers(client, admin, ["storage:write"], "summed")
    data = secrets.token_bytes(1024)
    file = {"argument": "base64Data", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    objects = f"/api/storage/buckets/{bucket}/objects"
    held = client.put(f"{objects}/{key}", headers=agent, files={"file": ("a.bin", data, "application/pdf")})
    assert held.status_code == 202, held.text
    request_id = held.json()["changeRequestId"]
    stored = owner_sql("select file_summary from system.change_requests where id = %s", request_id)
    assert stored == [{"file_summary": file}]

    owner_sql("update system.change_requests set file_summary = null where id = %s", request_id)
    listed = client.get("/api/approvals?status=pending", headers=admin).json()
    assert [entry["file"] for entry in listed if entry["id"] == request_id] == [file]
    one = client.get(f"/api/approvals/{request_id}", headers=admin).json()
    assert one["file"] == file and one["arguments"]["base64Data"] == base64.b64encode(data).decode()
