"""Uploads under the policies Supabase Storage documents: an INSERT policy alone lets a role upload new
objects; replacing one (PUT over an existing key, a TUS upload to it) needs UPDATE and SELECT policies that
cover it too, and is refused (403, the object untouched, no blob left behind) without them. The API key
replaces anything. This module drops the default owner policies, so each test's policies are all there is.
"""

from __future__ import annotations

import base64
import os
import secrets
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.storage.conftest import BUCKETS, TUS, NewBucket, local_blobs, new_tus_upload, owner_sql

ROLES = ["anon", "authenticated"]


@pytest.fixture(scope="module", autouse=True)
def only_the_tests_policies(client: TestClient) -> None:
    for action in ("select", "insert", "update", "delete"):
        owner_sql(client, f"drop policy storage_objects_owner_{action} on storage.objects")


def _policy(client: TestClient, bucket: str, role: str, action: str) -> None:
    check = "with check" if action == "insert" else "using"
    owner_sql(
        client,
        f'create policy "{role}_{action}_{bucket}" on storage.objects for {action} to {role} '
        f"{check} (bucket = '{bucket}')",
    )


def _caller(role: str, anon: dict[str, str], alice: dict[str, str]) -> dict[str, str]:
    return anon if role == "anon" else alice


def _put(client: TestClient, headers: dict[str, str], bucket: str, key: str, data: bytes) -> Any:
    return client.put(f"{BUCKETS}/{bucket}/objects/{key}", content=data, headers=headers)


def _row(client: TestClient, bucket: str, key: str) -> dict[str, Any]:
    [row] = owner_sql(
        client,
        "select blob_id::text, uploaded_by, size from storage.objects where bucket = %s and key = %s",
        (bucket, key),
    )
    return row


def _orphans(client: TestClient) -> set[str]:
    """Blob files no object row names (and no queued garbage: it is collected after every write)."""
    files = {name for _, _, names in os.walk(local_blobs(client).blobs) for name in names}
    rows = {row["blob_id"] for row in owner_sql(client, "select blob_id::text from storage.objects")}
    return files - rows


@pytest.mark.parametrize("role", ROLES)
def test_insert_policy_alone_creates_but_never_replaces(
    client: TestClient,
    admin: dict[str, str],
    anon: dict[str, str],
    alice: dict[str, str],
    new_bucket: NewBucket,
    role: str,
) -> None:
    bucket = new_bucket(public=False)
    _policy(client, bucket, role, "insert")
    caller = _caller(role, anon, alice)
    created = _put(client, caller, bucket, "drop/a.txt", b"first")
    assert created.status_code == 200, created.text
    assert created.json()["key"] == "drop/a.txt"
    posted = client.post(f"{BUCKETS}/{bucket}/objects?filename=b.txt", content=b"x", headers=caller)
    assert posted.status_code == 201, posted.text
    before = _row(client, bucket, "drop/a.txt")
    # Uploading again to the key is a replacement, which no policy of the caller's allows.
    again = _put(client, caller, bucket, "drop/a.txt", b"second")
    assert again.status_code == 403, again.text
    body = again.json()
    assert body["error"] == "STORAGE_PERMISSION_DENIED" and "already exists" in body["message"]
    assert "UPDATE and SELECT" in body["nextActions"]
    assert _row(client, bucket, "drop/a.txt") == before
    assert client.get(f"{BUCKETS}/{bucket}/objects/drop/a.txt", headers=admin).content == b"first"
    # Asking how to upload checks the same: a new key yes, the existing one no.
    strategy = f"{BUCKETS}/{bucket}/upload-strategy"
    assert client.post(strategy, json={"filename": "drop/new.txt"}, headers=caller).status_code == 200
    assert client.post(strategy, json={"filename": "drop/a.txt"}, headers=caller).status_code == 403
    assert _orphans(client) == set()


def test_replacing_needs_update_and_select(
    client: TestClient, admin: dict[str, str], alice: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket(public=False)
    _policy(client, bucket, "authenticated", "insert")
    _policy(client, bucket, "authenticated", "update")
    assert _put(client, alice, bucket, "r.txt", b"first").status_code == 200
    # UPDATE without SELECT: the row is hidden from the UPDATE, as in Supabase Storage.
    assert _put(client, alice, bucket, "r.txt", b"second").status_code == 403
    _policy(client, bucket, "authenticated", "select")
    first = _row(client, bucket, "r.txt")
    replaced = _put(client, alice, bucket, "r.txt", b"second")
    assert replaced.status_code == 200, replaced.text
    assert client.get(f"{BUCKETS}/{bucket}/objects/r.txt", headers=alice).content == b"second"
    second = _row(client, bucket, "r.txt")
    assert second["blob_id"] != first["blob_id"] and second["size"] == len(b"second")
    # The replaced version's blob is collected with the write, as before.
    assert not local_blobs(client).blob_path(first["blob_id"]).exists()
    garbage = "select 1 from storage.blob_garbage where blob_id = %s"
    assert owner_sql(client, garbage, (first["blob_id"],)) == []
    assert _orphans(client) == set()


def test_api_key_replaces_freely(
    client: TestClient, admin: dict[str, str], alice: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket(public=False)
    _policy(client, bucket, "authenticated", "insert")
    assert _put(client, alice, bucket, "mine.txt", b"alice's").status_code == 200
    first = _row(client, bucket, "mine.txt")
    assert _put(client, admin, bucket, "mine.txt", b"admin's").status_code == 200
    assert client.get(f"{BUCKETS}/{bucket}/objects/mine.txt", headers=admin).content == b"admin's"
    second = _row(client, bucket, "mine.txt")
    assert second["uploaded_by"] == first["uploaded_by"]  # replacing does not take the object over
    assert not local_blobs(client).blob_path(first["blob_id"]).exists()
    assert _orphans(client) == set()


@pytest.mark.parametrize("role", ROLES)
def test_resumable_upload_under_insert_policy_alone(
    client: TestClient,
    admin: dict[str, str],
    anon: dict[str, str],
    alice: dict[str, str],
    new_bucket: NewBucket,
    role: str,
) -> None:
    """TUS replaces as PUT does: a new key needs the INSERT policy alone; an existing key is refused when
    the upload is created, and, should the key be taken while the upload runs, when its last byte arrives,
    leaving the object as it was and no blob behind."""
    bucket = new_bucket(public=False)
    _policy(client, bucket, role, "insert")
    caller = _caller(role, anon, alice)
    patch = {**caller, **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    data = secrets.token_bytes(20_000)
    url = new_tus_upload(client, caller, bucket, "big.bin", len(data))
    assert client.patch(url, content=data, headers=patch).status_code == 204
    assert client.get(f"{BUCKETS}/{bucket}/objects/big.bin", headers=admin).content == data
    meta = "key " + base64.b64encode(b"big.bin").decode()
    refused = client.post(
        f"{BUCKETS}/{bucket}/tus",
        headers={**caller, **TUS, "Upload-Length": "3", "Upload-Metadata": meta},
    )
    assert refused.status_code == 403 and refused.json()["error"] == "STORAGE_PERMISSION_DENIED"
    # The key is free when the upload starts, taken when it ends.
    url = new_tus_upload(client, caller, bucket, "raced.bin", 5)
    assert _put(client, admin, bucket, "raced.bin", b"admin's").status_code == 200
    kept = _row(client, bucket, "raced.bin")
    finished = client.patch(url, content=b"late!", headers=patch)
    assert finished.status_code == 403, finished.text
    assert _row(client, bucket, "raced.bin") == kept
    assert client.get(f"{BUCKETS}/{bucket}/objects/raced.bin", headers=admin).content == b"admin's"
    assert _orphans(client) == set()


PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


@pytest.mark.parametrize("role", ROLES)
def test_a_policy_on_the_type_decides_before_the_body_as_at_the_commit(
    client: TestClient, anon: dict[str, str], alice: dict[str, str], new_bucket: NewBucket, role: str
) -> None:
    """A policy that admits only images: the early check (made before the body is read) is made with the
    type the client claims, so an image is taken by POST and PUT alike, and anything else refused."""
    bucket = new_bucket(public=False)
    owner_sql(
        client,
        f'create policy "{role}_images_{bucket}" on storage.objects for insert to {role} '
        f"with check (bucket = '{bucket}' and left(mime_type, 6) = 'image/')",
    )
    caller = _caller(role, anon, alice)
    image = {"file": ("photo.png", PNG, "image/png")}
    posted = client.post(f"{BUCKETS}/{bucket}/objects", files=image, headers=caller)
    assert posted.status_code == 201, posted.text
    put = client.put(f"{BUCKETS}/{bucket}/objects/put.png", files=image, headers=caller)
    assert put.status_code == 200, put.text
    text = {"file": ("notes.txt", b"plain words", "text/plain")}
    refused = client.post(f"{BUCKETS}/{bucket}/objects", files=text, headers=caller)
    assert refused.status_code == 403, refused.text
    keys = {
        row["key"]
        for row in owner_sql(client, "select key from storage.objects where bucket = %s", (bucket,))
    }
    assert keys == {posted.json()["key"], "put.png"}
