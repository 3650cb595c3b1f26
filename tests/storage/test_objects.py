"""Buckets and objects on the local backend through InsForge's REST routes: shapes, status codes, streaming
downloads with ranges and validators, content detection, key safety and every client mistake's 4xx."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.storage.conftest import BUCKETS, MAX_FILE_SIZE, NewBucket, local_blobs
from tests.support.app import services_of

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + b"\x00" * 64


def objects(bucket: str) -> str:
    return f"{BUCKETS}/{bucket}/objects"


def put(client: TestClient, headers: dict[str, str], bucket: str, key: str, data: bytes, **kw: str) -> dict:  # type: ignore[type-arg]
    response = client.put(
        f"{objects(bucket)}/{key}",
        files={"file": (kw.get("name", "f.bin"), data, kw.get("type", "text/plain"))},
        headers=headers,
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
    assert client.get(f"{objects(name)}/inside/a.txt", headers=admin).status_code == 404
    assert client.patch(f"{BUCKETS}/{name}", json={"isPublic": True}, headers=admin).status_code == 404


@pytest.mark.parametrize("name", ["has space", "dot.name", "x" * 64, "ümlaut", ""])
def test_bucket_name_rules(client: TestClient, admin: dict[str, str], name: str) -> None:
    response = client.post(BUCKETS, json={"bucketName": name}, headers=admin)
    assert response.status_code == 400
    assert response.json()["error"] == "STORAGE_INVALID_PARAMETER"


def test_buckets_need_admin(client: TestClient, anon: dict[str, str], alice: dict[str, str]) -> None:
    assert client.get(BUCKETS).status_code == 401
    assert client.get(BUCKETS, headers=anon).status_code == 401
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
    etag = got.headers["etag"]
    # A strong validator, the same on every download of this version; never 32 hex digits, which S3 clients
    # would check against the MD5 of the bytes (only the S3 endpoint's PutObject hashes them).
    assert etag.startswith('"') and etag == client.get(f"{objects(bucket)}/docs/report.bin").headers["etag"]
    assert etag != f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"' and "-" in etag
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-length"] == str(len(data))
    encoded = client.get(f"{objects(bucket)}/docs%2Freport.bin")
    assert encoded.content == data


def test_replace_in_place(client: TestClient, admin: dict[str, str], new_bucket: NewBucket) -> None:
    bucket = new_bucket()
    put(client, admin, bucket, "k.txt", b"first")
    first = client.get(f"{objects(bucket)}/k.txt").headers["etag"]
    [first_blob] = _blob_ids(client, bucket)
    assert local_blobs(client).blob_path(first_blob).exists()
    put(client, admin, bucket, "k.txt", b"second version")
    second = client.get(f"{objects(bucket)}/k.txt")
    assert second.content == b"second version"
    assert second.headers["etag"] != first
    assert client.get(f"{objects(bucket)}/k.txt", headers={"If-None-Match": first}).status_code == 200
    listed = client.get(objects(bucket), headers=admin).json()
    assert [o["key"] for o in listed["data"]] == ["k.txt"]
    blobs = local_blobs(client)
    files = [f for _, _, names in os.walk(blobs.blobs) for f in names]
    row_ids = {str(r) for r in _blob_ids(client, bucket)}
    assert row_ids <= set(files)
    assert not blobs.blob_path(first_blob).exists()  # the replaced version's file went with the commit


def _blob_ids(client: TestClient, bucket: str) -> list[str]:
    async def read() -> list[str]:
        async with services_of(client).core.database.as_owner() as cur:
            await cur.execute("select blob_id::text from storage.objects where bucket = %s", (bucket,))
            return [r["blob_id"] for r in await cur.fetchall()]

    assert client.portal is not None
    return client.portal.call(read)


def test_ranges_and_validators(client: TestClient, admin: dict[str, str], new_bucket: NewBucket) -> None:
    bucket = new_bucket()
    data = bytes(range(256)) * 40
    put(client, admin, bucket, "r.bin", data)
    url = f"{objects(bucket)}/r.bin"
    part = client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert client.get(url, headers={"Range": "bytes=-5"}).content == data[-5:]
    assert client.get(url, headers={"Range": "bytes=10000-"}).content == data[10000:]
    unsatisfiable = client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{len(data)}"
    etag = client.get(url).headers["etag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    modified = client.get(url).headers["last-modified"]
    assert client.get(url, headers={"If-Modified-Since": modified}).status_code == 304
    stale = client.get(url, headers={"Range": "bytes=0-0", "If-Range": '"stale"'})
    assert stale.status_code == 200 and stale.content == data
    head = client.head(url)
    assert (
        head.status_code == 200 and head.headers["content-length"] == str(len(data)) and head.content == b""
    )


XHTML_IN_XML = (
    b'<feed xmlns="http://www.w3.org/2005/Atom"><h:script xmlns:h="http://www.w3.org/1999/xhtml">'
    b"alert(document.domain)</h:script></feed>"
)


@pytest.mark.parametrize(
    ("content", "claimed", "stored_type", "attachment"),
    [
        (b"<html><script>alert(1)</script></html>", "text/plain", "text/html", True),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "image/png", "image/svg+xml", True),
        (b"<?xml version='1.0'?><a/>", "text/plain", "application/xml", True),
        (b"alert(1)", "application/javascript", "application/javascript", True),
        # Browsers render every XML type as a document, and run its XHTML-namespaced scripts (a prefix keeps
        # `<script` out of the bytes the sniffer reads).
        (XHTML_IN_XML, "application/atom+xml", "application/atom+xml", True),
        (XHTML_IN_XML, "application/rss+xml", "application/rss+xml", True),
        (XHTML_IN_XML, "application/vnd.mozilla.xul+xml", "application/vnd.mozilla.xul+xml", True),
        (XHTML_IN_XML, "text/xsl", "text/xsl", True),
        (PNG, "text/html", "image/png", False),
        (b"plain words", "text/plain", "text/plain", False),
    ],
)
def test_content_sniffed_and_active_types_downloaded(
    client: TestClient,
    admin: dict[str, str],
    new_bucket: NewBucket,
    content: bytes,
    claimed: str,
    stored_type: str,
    attachment: bool,
) -> None:
    bucket = new_bucket()
    stored = put(client, admin, bucket, "page", content, type=claimed)
    assert stored["mimeType"] == stored_type
    got = client.get(f"{objects(bucket)}/page")
    assert got.headers["content-type"].startswith(stored_type)
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers.get("content-disposition", "").startswith("attachment") is attachment


@pytest.mark.parametrize(
    "key",
    [
        "..%2Fescape",
        "a%2F..%2F..%2Fb",
        "a%2F.%2Fb",
        "a/%2E%2E/b",
        "%2Fabs",
        "a%00b",
        "a%5Cb",
        "%FF%FE",
        "x" * 1100,
        "tab%09here",
    ],
)
def test_unsafe_keys_refused(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket, key: str
) -> None:
    bucket = new_bucket()
    url = f"{objects(bucket)}/{key}"
    response = client.put(url, files={"file": ("f", b"x", "text/plain")}, headers=admin)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "STORAGE_INVALID_PARAMETER"
    assert client.get(objects(bucket), headers=admin).json()["data"] == []


def test_traversal_never_reaches_the_disk(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket()
    response = client.put(
        f"{objects(bucket)}/..%2F..%2Fescaped.txt", files={"file": ("f", b"x", "text/plain")}, headers=admin
    )
    assert response.status_code == 400
    root = local_blobs(client).root
    assert not (root.parent / "escaped.txt").exists()


def test_size_limit_while_streaming(client: TestClient, admin: dict[str, str], new_bucket: NewBucket) -> None:
    bucket = new_bucket()
    blobs = local_blobs(client)
    before = _files(blobs.root)

    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_FILE_SIZE // 4096 + 10):
            yield b"x" * 4096

    too_big = client.put(
        f"{objects(bucket)}/big.bin",
        content=chunks(),
        headers={**admin, "content-type": "application/octet-stream"},
    )
    assert too_big.status_code == 413
    assert too_big.json()["error"] == "STORAGE_INVALID_PARAMETER"
    form = client.put(
        f"{objects(bucket)}/big2.bin",
        files={"file": ("b", b"y" * (MAX_FILE_SIZE + 1), "text/plain")},
        headers=admin,
    )
    assert form.status_code == 413
    assert client.get(objects(bucket), headers=admin).json()["data"] == []
    assert _files(blobs.root) == before
    exact = client.put(f"{objects(bucket)}/exact.bin", content=b"z" * MAX_FILE_SIZE, headers=admin)
    assert exact.status_code == 200 and exact.json()["size"] == MAX_FILE_SIZE


def _files(root: os.PathLike[str]) -> set[str]:
    return {os.path.join(d, f) for d, _, names in os.walk(root) for f in names}


def test_raw_body_and_generated_keys(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket()
    raw = client.put(
        f"{objects(bucket)}/raw.json",
        content=b'{"a": 1}',
        headers={**admin, "content-type": "application/json"},
    )
    assert raw.status_code == 200 and raw.json()["mimeType"] == "application/json"
    generated = client.post(
        objects(bucket), files={"file": ("My Photo (1).png", PNG, "image/png")}, headers=admin
    )
    assert generated.status_code == 201, generated.text
    key = generated.json()["key"]
    assert key.startswith("My-Photo--1--") and key.endswith(".png")
    assert client.get(f"{objects(bucket)}/{key}").content == PNG
    named = client.post(f"{objects(bucket)}?filename=notes.txt", content=b"hi", headers=admin)
    assert named.status_code == 201 and named.json()["key"].startswith("notes-")


def test_form_without_file_is_400(client: TestClient, admin: dict[str, str], new_bucket: NewBucket) -> None:
    bucket = new_bucket()
    response = client.put(
        f"{objects(bucket)}/k", data={"other": "value"}, files={"not_file": ("x", b"1")}, headers=admin
    )
    assert response.status_code == 400
    assert response.json()["message"] == "File is required"
    assert client.get(objects(bucket), headers=admin).json()["data"] == []


_FILE_PART = (
    b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
    b"Content-Type: text/plain\r\n\r\nthe first half"
)


@pytest.mark.parametrize(
    "body",
    [
        _FILE_PART,  # cut inside the file: no boundary after it
        _FILE_PART + b"\r\n--B\r\n",  # the file's part ends, the form never does
        _FILE_PART + b'\r\n--B\r\nContent-Disposition: form-data; name="x"\r\n',
    ],
)
def test_a_form_that_never_ends_stores_nothing(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket, body: bytes
) -> None:
    """A form cut short (a client or proxy that stopped sending, with the request's length to match) was
    stored as if whole: the parser's `finalize` does not check that the closing boundary came."""
    bucket = new_bucket()
    headers = {**admin, "Content-Type": "multipart/form-data; boundary=B"}
    response = client.put(f"{objects(bucket)}/cut.txt", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "STORAGE_INVALID_PARAMETER"
    assert client.get(objects(bucket), headers=admin).json()["data"] == []
    whole = client.put(f"{objects(bucket)}/cut.txt", content=_FILE_PART + b"\r\n--B--\r\n", headers=headers)
    assert whole.status_code == 200, whole.text
    assert client.get(f"{objects(bucket)}/cut.txt").content == b"the first half"


def test_unknown_bucket_is_404(client: TestClient, admin: dict[str, str]) -> None:
    missing = "missing-" + os.urandom(3).hex()
    put_response = client.put(f"{objects(missing)}/a", content=b"x", headers=admin)
    assert put_response.status_code == 404 and put_response.json()["error"] == "STORAGE_NOT_FOUND"
    assert client.get(objects(missing), headers=admin).status_code == 404
    assert client.get(f"{objects(missing)}/a", headers=admin).status_code == 404
    # With no credential it is refused as a private bucket is (InsForge's verifyUser answers first).
    assert client.get(f"{objects(missing)}/a").status_code == 401


def test_list_prefix_search_paging(client: TestClient, admin: dict[str, str], new_bucket: NewBucket) -> None:
    bucket = new_bucket()
    for key in ["a/1.txt", "a/2.txt", "a/3.log", "b/1.txt", "c%_.txt"]:
        put(client, admin, bucket, key.replace("%", "%25"), b"x")
    page = client.get(objects(bucket), params={"prefix": "a/", "limit": 2}, headers=admin).json()
    assert [o["key"] for o in page["data"]] == ["a/1.txt", "a/2.txt"]
    assert page["pagination"] == {"offset": 0, "limit": 2, "total": 3}
    second = client.get(
        objects(bucket), params={"prefix": "a/", "limit": 2, "offset": 2}, headers=admin
    ).json()
    assert [o["key"] for o in second["data"]] == ["a/3.log"]
    assert second["pagination"]["total"] == 3
    past = client.get(objects(bucket), params={"offset": 50}, headers=admin).json()
    assert past["data"] == [] and past["pagination"]["total"] == 5
    search = client.get(objects(bucket), params={"search": ".txt"}, headers=admin).json()
    assert len(search["data"]) == 4
    literal = client.get(objects(bucket), params={"search": "%_"}, headers=admin).json()
    assert [o["key"] for o in literal["data"]] == ["c%_.txt"]
    assert client.get(objects(bucket), params={"limit": 1001}, headers=admin).status_code == 400
    assert client.get(objects(bucket), params={"offset": -1}, headers=admin).status_code == 400


def test_delete_one_and_many(client: TestClient, admin: dict[str, str], new_bucket: NewBucket) -> None:
    bucket = new_bucket()
    for key in ["x", "y", "z"]:
        put(client, admin, bucket, key, b"1")
    assert client.delete(f"{objects(bucket)}/x", headers=admin).json() == {
        "message": "Object deleted successfully"
    }
    assert client.delete(f"{objects(bucket)}/x", headers=admin).status_code == 404
    many = client.request("DELETE", objects(bucket), json={"keys": ["y", "nope", "z", "y"]}, headers=admin)
    assert many.status_code == 200
    assert many.json() == {
        "results": [
            {"key": "y", "status": "deleted"},
            {"key": "nope", "status": "notFound"},
            {"key": "z", "status": "deleted"},
        ]
    }
    assert client.get(objects(bucket), headers=admin).json()["data"] == []
    assert client.request("DELETE", objects(bucket), json={"keys": []}, headers=admin).status_code == 400
    too_many = client.request("DELETE", objects(bucket), json={"keys": ["k"] * 1001}, headers=admin)
    assert too_many.status_code == 400


def test_storage_config(client: TestClient, admin: dict[str, str], alice: dict[str, str]) -> None:
    config = client.get("/api/storage/config", headers=admin)
    assert config.status_code == 200 and set(config.json()) == {
        "id",
        "maxFileSizeMb",
        "createdAt",
        "updatedAt",
    }
    assert client.get("/api/storage/config", headers=alice).status_code == 403
    assert client.put("/api/storage/config", json={"maxFileSizeMb": 0}, headers=admin).status_code == 400
    assert client.put("/api/storage/config", json={"maxFileSizeMb": 201}, headers=admin).status_code == 400
    assert client.put("/api/storage/config", json={"maxFileSizeMb": "5"}, headers=admin).status_code == 400
