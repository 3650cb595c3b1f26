"""Buckets and objects on the local backend through InsForge's REST routes: shapes, status codes, streaming
downloads with ranges and validators, content detection, key safety and every client mistake's 4xx."""

from __future__ import annotations

import hashlib
import os

import pytest
from starlette.testclient import TestClient

from tests.storage.conftest import BUCKETS, MAX_FILE_SIZE, NewBucket
from tests.support.app import services_of

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + b"\x00" * 64


def objects(bucket: str) -> str:
    return f"{BUCKETS}/{bucket}/objects"


def put(client: TestClient, headers: dict[str, str], bucket: str, key: str, data: bytes, **kw: str) -> dict:  # type: ignore[type-arg]
    response = client.put(
        f"{objects(bucket)}/{key}", files={"file": (kw.get("name", "f.bin"), data, kw.get("type", "text/plain"))}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict = response.json()  # type: ignore[type-arg]
    return body


def test_bucket_lifecycle(client: TestClient, admin: dict[str, str]) -> None:
    name = "lifecycle-" + os.urandom(4).hex()
    created = client.post(BUCKETS, json={"bucketName": name, "isPublic": False}, headers=admin)
    assert created.status_code == 201
    assert created.json()["bucketName"] == name and created.json()["isPublic"] is False
    listed = client.get(BUCKETS, headers=admin).json()
    assert {"name": name, "public": False} in [{"name": b["name"], "public": b["public"]} for b in listed]
    assert client.post(BUCKETS, json={"bucketName": name}, headers=admin).status_code == 409
    patched = client.patch(f"{BUCKETS}/{name}", json={"isPublic": True}, headers=admin)
    assert patched.status_code == 200 and patched.json()["isPublic"] is True
    put(client, admin, name, "inside/a.txt", b"hello")
    deleted = client.delete(f"{BUCKETS}/{name}", headers=admin)
    assert deleted.status_code == 200
    assert name not in [b["name"] for b in client.get(BUCKETS, headers=admin).json()]
    assert client.delete(f"{BUCKETS}/{name}", headers=admin).status_code == 404
    assert client.get(f"{objects(name)}/inside/a.txt").status_code == 404
    assert client.patch(f"{BUCKETS}/{name}", json={"isPublic": True}, headers=admin).status_code == 404


@pytest.mark.parametrize("name", ["has space", "dot.name", "x" * 64, "ümlaut", ""])
def test_bucket_name_rules(client: TestClient, admin: dict[str, str], name: str) -> None:
    response = client.post(BUCKETS, json={"bucketName": name}, headers=admin)
    assert response.status_code == 400
    assert response.json()["error"] == "STORAGE_INVALID_PARAMETER"


def test_buckets_need_admin(client: TestClient, anon: dict[str, str], alice: dict[str, str]) -> None:
    assert client.get(BUCKETS).status_code == 401
    assert client.get(BUCKETS, headers=anon).status_code == 403
    assert client.post(BUCKETS, json={"bucketName": "nope"}, headers=alice).status_code == 403


def test_upload_download_and_shape(client: TestClient, admin: dict[str, str], new_bucket: NewBucket) -> None:
    bucket = new_bucket()
    data = os.urandom(100_000)
    stored = put(client, admin, bucket, "docs/report.bin", data, type="application/x-thing")
    assert stored["bucket"] == bucket and stored["key"] == "docs/report.bin" and stored["size"] == len(data)
    assert stored["mimeType"] == "application/x-thing"
    assert stored["url"].endswith(f"/api/storage/buckets/{bucket}/objects/docs%2Freport.bin")
    assert stored["uploadedAt"].endswith("Z")
    got = client.get(f"{objects(bucket)}/docs/report.bin")
    assert got.status_code == 200 and got.content == data
    assert got.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-length"] == str(len(data))
    encoded = client.get(f"{objects(bucket)}/docs%2Freport.bin")
    assert encoded.content == data


def test_replace_in_place(client: TestClient, admin: dict[str, str], new_bucket: NewBucket) -> None:
    bucket = new_bucket()
    put(client, admin, bucket, "k.txt", b"first")
    put(client, admin, bucket, "k.txt", b"second version")
    assert client.get(f"{objects(bucket)}/k.txt").content == b"second version"
    listed = client.get(objects(bucket), headers=admin).json()
    assert [o["key"] for o in listed["data"]] == ["k.txt"]
    blobs = services_of(client).storage.blobs
    files = [f for _, _, names in os.walk(blobs.blobs) for f in names]
    row_ids = {str(r) for r in _blob_ids(client, bucket)}
    assert row_ids <= set(files)


def _blob_ids(client: TestClient, bucket: str) -> list[str]:
    import anyio

    async def read() -> list[str]:
        async with services_of(client).core.database.as_owner() as cur:
            await cur.execute("select blob_id::text from storage.objects where bucket = %s", (bucket,))
            return [r["blob_id"] for r in await cur.fetchall()]

    return anyio.run(read)
