"""Resumable uploads (TUS 1.0) with tuspy, the protocol's Python client: an upload interrupted after some
chunks resumes from the server's offset, and the object appears only when the last byte is in."""

from __future__ import annotations

import io
import secrets

import pytest
from starlette.testclient import TestClient
from tusclient.client import TusClient

from tests.storage.conftest import BUCKETS, MAX_FILE_SIZE, NewBucket
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
