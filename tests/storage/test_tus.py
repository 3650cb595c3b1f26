"""Resumable uploads (TUS 1.0) with tuspy, the protocol's Python client: an upload interrupted after some
chunks resumes from the server's offset, and the object appears only when the last byte is in."""

from __future__ import annotations

import base64
import io
import secrets

import pytest
from starlette.testclient import TestClient
from tusclient.client import TusClient

from tests.storage.conftest import BUCKETS, MAX_FILE_SIZE, NewBucket, local_blobs
from tests.support.app import services_of

TUS = {"Tus-Resumable": "1.0.0"}


def _tus_client(client: TestClient, headers: dict[str, str], bucket: str) -> TusClient:
    return TusClient(f"http://testserver{BUCKETS}/{bucket}/tus", headers=headers)


@pytest.fixture
def requests_through_app(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """tuspy's HTTP calls (`requests`) answered by the app under test (TestClient), not the network."""
    import requests

    def request(method: str, url: str, **kwargs: object) -> requests.Response:
        headers = kwargs.get("headers") or {}
        data = kwargs.get("data")
        answer = client.request(method, url, headers=headers, content=data)  # type: ignore[arg-type]
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers.update(answer.headers)
        response._content = answer.content
        response.url = url
        return response

    monkeypatch.setattr(requests, "request", request)
    for name in ("post", "head", "patch", "delete"):
        monkeypatch.setattr(requests, name, lambda url, _m=name, **kw: request(_m.upper(), url, **kw))


@pytest.mark.usefixtures("requests_through_app")
def test_interrupted_upload_resumes(client: TestClient, alice: dict[str, str], new_bucket: NewBucket) -> None:
    bucket = new_bucket(public=False)
    data = secrets.token_bytes(200_000)
    tus = _tus_client(client, alice, bucket)
    first = tus.uploader(
        file_stream=io.BytesIO(data), chunk_size=64 * 1024, metadata={"key": "big/resumed.bin"}
    )
    first.upload_chunk()  # type: ignore[no-untyped-call]  # one chunk, then the "link drops"
    assert first.url is not None
    listed = client.get(f"{BUCKETS}/{bucket}/objects", headers=alice).json()
    assert listed["data"] == []  # nothing visible until complete
    offset = client.head(first.url, headers={**alice, **TUS})
    assert offset.headers["upload-offset"] == str(64 * 1024) and offset.headers["upload-length"] == str(
        len(data)
    )
    resumed = tus.uploader(file_stream=io.BytesIO(data), chunk_size=64 * 1024, url=first.url)
    assert resumed.offset == 64 * 1024
    resumed.upload()
    got = client.get(f"{BUCKETS}/{bucket}/objects/big/resumed.bin", headers=alice)
    assert got.status_code == 200 and got.content == data
    assert client.head(first.url, headers={**alice, **TUS}).status_code == 404


def test_protocol_rules(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket(public=False)
    base = f"{BUCKETS}/{bucket}/tus"
    options = client.options(base)
    assert options.status_code == 204 and options.headers["tus-version"] == "1.0.0"
    assert (
        "creation" in options.headers["tus-extension"] and "termination" in options.headers["tus-extension"]
    )
    assert client.post(base, headers={**alice, "Upload-Length": "10"}).status_code == 412
    too_big = client.post(base, headers={**alice, **TUS, "Upload-Length": str(MAX_FILE_SIZE + 1)})
    assert too_big.status_code == 413
    meta = "key " + "bm90ZXMudHh0"  # notes.txt
    created = client.post(base, headers={**alice, **TUS, "Upload-Length": "10", "Upload-Metadata": meta})
    assert created.status_code == 201 and created.headers["upload-expires"]
    url = created.headers["location"]
    assert client.head(url, headers={**bob, **TUS}).status_code == 404  # not Bob's upload
    patch = {**alice, **TUS, "Content-Type": "application/offset+octet-stream"}
    assert client.patch(url, headers={**patch, "Upload-Offset": "3"}, content=b"abc").status_code == 409
    assert (
        client.patch(
            url, headers={**patch, "Upload-Offset": "0", "Content-Type": "text/plain"}, content=b"a"
        ).status_code
        == 415
    )
    assert client.patch(url, headers={**patch, "Upload-Offset": "0"}, content=b"x" * 11).status_code == 400
    done = client.patch(url, headers={**patch, "Upload-Offset": "0"}, content=b"0123456789")
    assert done.status_code == 204 and done.headers["upload-offset"] == "10"
    assert client.get(f"{BUCKETS}/{bucket}/objects/notes.txt", headers=alice).content == b"0123456789"
    # A write the policies forbid is refused at creation: Bob may not replace Alice's object.
    assert (
        client.post(base, headers={**bob, **TUS, "Upload-Length": "1", "Upload-Metadata": meta}).status_code
        == 403
    )


def test_termination_and_expiry(client: TestClient, admin: dict[str, str], new_bucket: NewBucket) -> None:
    bucket = new_bucket()
    base = f"{BUCKETS}/{bucket}/tus"
    created = client.post(base, headers={**admin, **TUS, "Upload-Length": "100"})
    url = created.headers["location"]
    assert client.delete(url, headers={**admin, **TUS}).status_code == 204
    assert client.head(url, headers={**admin, **TUS}).status_code == 404
    expiring = client.post(base, headers={**admin, **TUS, "Upload-Length": "100"}).headers["location"]

    async def expire() -> None:
        async with services_of(client).core.database.as_owner() as cur:
            await cur.execute(
                "update storage.tus_uploads set expires_at = now() - interval '1 second' where id::text = %s",
                (expiring.rsplit("/", 1)[1],),
            )

    assert client.portal is not None
    client.portal.call(expire)
    assert client.head(expiring, headers={**admin, **TUS}).status_code == 410
    assert client.head(expiring, headers={**admin, **TUS}).status_code == 404


def test_finished_upload_becomes_the_object_without_a_copy(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket
) -> None:
    """On the local disk the finished upload's file is the object's blob (same inode): finishing a 2 GB
    upload must not copy 2 GB again. Nothing else is left: no incoming name, no upload file."""
    bucket = new_bucket()
    data = secrets.token_bytes(150_000)
    meta = "key " + base64.b64encode(b"whole/linked.bin").decode()
    created = client.post(
        f"{BUCKETS}/{bucket}/tus",
        headers={**admin, **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta},
    )
    url = created.headers["location"]
    patch = {**admin, **TUS, "Content-Type": "application/offset+octet-stream"}
    assert (
        client.patch(url, content=data[:100_000], headers={**patch, "Upload-Offset": "0"}).status_code == 204
    )
    storage = services_of(client).storage
    upload_file = storage.tus_dir / url.rsplit("/", 1)[1]
    inode = upload_file.stat().st_ino
    last = client.patch(url, content=data[100_000:], headers={**patch, "Upload-Offset": "100000"})
    assert last.status_code == 204 and last.headers["upload-offset"] == str(len(data))
    got = client.get(f"{BUCKETS}/{bucket}/objects/whole/linked.bin", headers=admin)
    assert got.status_code == 200 and got.content == data
    blobs = local_blobs(client)
    blob = next(p for p in blobs.blobs.rglob("*") if p.is_file() and p.stat().st_ino == inode)
    assert blob.read_bytes() == data and blob.stat().st_nlink == 1
    assert not upload_file.exists() and list(blobs.incoming.iterdir()) == []


def test_finish_refused_by_policy_leaves_no_blob_and_resumes_later(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], new_bucket: NewBucket
) -> None:
    """The key was free when Alice began; Bob took it before her last byte, and the owner policy keeps her
    from replacing his object. Her finish is refused, Bob's object stays, and her bytes left no blob; once
    Bob's object is gone, her client's next HEAD makes hers."""
    bucket = new_bucket(public=False)
    data = secrets.token_bytes(10_000)
    meta = "key " + base64.b64encode(b"contested.bin").decode()
    url = client.post(
        f"{BUCKETS}/{bucket}/tus",
        headers={**alice, **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta},
    ).headers["location"]
    taken = client.put(f"{BUCKETS}/{bucket}/objects/contested.bin", content=b"bob's", headers=bob)
    assert taken.status_code == 200, taken.text
    blobs = local_blobs(client)
    before = {p for p in blobs.blobs.rglob("*") if p.is_file()}
    patch = {**alice, **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    refused = client.patch(url, content=data, headers=patch)
    assert refused.status_code == 403, refused.text
    assert client.get(f"{BUCKETS}/{bucket}/objects/contested.bin", headers=bob).content == b"bob's"
    assert {p for p in blobs.blobs.rglob("*") if p.is_file()} == before
    assert list(blobs.incoming.iterdir()) == []

    # Every byte is in, so a client resuming sends nothing more: its HEAD makes the object, or says why not.
    assert client.head(url, headers={**alice, **TUS}).status_code == 403
    assert client.delete(f"{BUCKETS}/{bucket}/objects/contested.bin", headers=bob).status_code == 200
    finished = client.head(url, headers={**alice, **TUS})
    assert finished.status_code == 200 and finished.headers["upload-offset"] == str(len(data))
    assert client.get(f"{BUCKETS}/{bucket}/objects/contested.bin", headers=alice).content == data
    assert client.head(url, headers={**alice, **TUS}).status_code == 404  # the upload is the object now


def test_abandoning_a_complete_upload_makes_no_object(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], new_bucket: NewBucket
) -> None:
    """DELETE abandons an upload even when every byte is in (unlike HEAD, it never finishes one)."""
    bucket = new_bucket(public=False)
    meta = "key " + base64.b64encode(b"abandoned.bin").decode()
    url = client.post(
        f"{BUCKETS}/{bucket}/tus", headers={**alice, **TUS, "Upload-Length": "5", "Upload-Metadata": meta}
    ).headers["location"]
    assert (
        client.put(f"{BUCKETS}/{bucket}/objects/abandoned.bin", content=b"bob", headers=bob).status_code
        == 200
    )
    patch = {**alice, **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    assert client.patch(url, content=b"alice", headers=patch).status_code == 403
    assert client.delete(f"{BUCKETS}/{bucket}/objects/abandoned.bin", headers=bob).status_code == 200
    assert client.delete(url, headers={**alice, **TUS}).status_code == 204
    assert client.get(f"{BUCKETS}/{bucket}/objects/abandoned.bin", headers=alice).status_code == 404
    assert client.head(url, headers={**alice, **TUS}).status_code == 404
