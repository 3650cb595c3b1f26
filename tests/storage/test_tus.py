"""Resumable uploads (TUS 1.0) with tuspy, the protocol's Python client: an upload interrupted after some
chunks resumes from the server's offset, and the object appears only when the last byte is in."""

from __future__ import annotations

import base64
import io
import os
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient
from tusclient.client import TusClient

from kilnbase.identity.principal import CredentialKind, Principal
from kilnbase.storage.tus import TusUploads
from tests.storage.conftest import (
    ALICE_ID,
    BOB_ID,
    BUCKETS,
    MAX_FILE_SIZE,
    TUS,
    NewBucket,
    let_anon_write,
    local_blobs,
    new_tus_upload,
    owner_sql,
)
from tests.support.app import services_of


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
    # Finished, the upload still answers a client that missed the last answer: complete, nothing to send.
    done = client.head(first.url, headers={**alice, **TUS})
    assert done.status_code == 200 and done.headers["upload-offset"] == str(len(data))


def _with_raw_headers(
    client: TestClient, method: str, url: str, headers: dict[str, Any], content: bytes = b""
) -> httpx.Response:
    """A request whose header bytes reach the app as sent (the TestClient re-encodes them as UTF-8)."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as raw:
            return await raw.request(method, url, headers=headers, content=content)

    assert client.portal is not None, "inside the client's `with` block"
    return client.portal.call(send)


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
    # A superscript two (Latin-1 0xB2) is a digit to str.isdigit, not to int(): refused, not a 500.
    odd_offset = _with_raw_headers(client, "PATCH", url, {**patch, "Upload-Offset": b"\xb2"}, b"a")
    assert odd_offset.status_code == 400, odd_offset.text
    odd_length = _with_raw_headers(client, "POST", base, {**alice, **TUS, "Upload-Length": b"\xb2"})
    assert odd_length.status_code == 400, odd_length.text
    # ASCII digits past int()'s 4,300-digit limit: refused too.
    long_length = client.post(base, headers={**alice, **TUS, "Upload-Length": "9" * 5000})
    assert long_length.status_code == 400, long_length.text
    long_offset = client.patch(url, headers={**patch, "Upload-Offset": "9" * 5000}, content=b"a")
    assert long_offset.status_code == 400, long_offset.text
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


def test_expired_uploads_finished_or_not_are_removed_as_uploads_are_created(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket
) -> None:
    """A finished upload's row stays, to answer a client that missed the last answer, until it expires; a
    server that runs for weeks removes the expired ones as uploads are created, not only when it restarts."""
    bucket = new_bucket()
    finished = new_tus_upload(client, admin, bucket, "kept-a-while.bin", 3)
    patch = {**admin, **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    assert client.patch(finished, content=b"abc", headers=patch).status_code == 204
    abandoned = new_tus_upload(client, admin, bucket, "never-sent.bin", 3)
    ids = [url.rsplit("/", 1)[1] for url in (finished, abandoned)]
    owner_sql(
        client,
        "update storage.tus_uploads set expires_at = now() - interval '1 second' where id::text = any(%s)",
        (ids,),
    )
    new_tus_upload(client, admin, bucket, "later.bin", 3)
    left = owner_sql(client, "select id from storage.tus_uploads where id::text = any(%s)", (ids,))
    assert left == []
    assert not (services_of(client).storage.tus_dir / ids[1]).exists()
    assert client.head(finished, headers={**admin, **TUS}).status_code == 404


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
    client: TestClient,
    alice: dict[str, str],
    bob: dict[str, str],
    new_bucket: NewBucket,
    database_url: str,
) -> None:
    """The key was free when Alice's last PATCH began (so it was let through before its body), but Bob's
    object took it while her bytes streamed (renamed onto it), and the owner policy keeps her from replacing
    his object. Her finish is refused, Bob's object stays, and her bytes left no blob; once Bob's object is
    gone, her client's next HEAD makes hers."""
    bucket = new_bucket(public=False)
    data = secrets.token_bytes(10_000)
    meta = "key " + base64.b64encode(b"contested.bin").decode()
    url = client.post(
        f"{BUCKETS}/{bucket}/tus",
        headers={**alice, **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta},
    ).headers["location"]
    seeded = client.put(f"{BUCKETS}/{bucket}/objects/bob-seed.bin", content=b"bob's", headers=bob)
    assert seeded.status_code == 200, seeded.text
    blobs = local_blobs(client)
    before = {p for p in blobs.blobs.rglob("*") if p.is_file()}

    def body() -> Iterator[bytes]:
        """The bytes, with Bob taking the key between the first half and the second (read once the
        server has let the PATCH through)."""
        yield data[:5_000]
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "update storage.objects set key = 'contested.bin' where bucket = %s and key = 'bob-seed.bin'",
                (bucket,),
            )
        yield data[5_000:]

    patch = {**alice, **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    refused = client.patch(url, content=body(), headers=patch)
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
    done = client.head(url, headers={**alice, **TUS})  # the upload is the object now: complete
    assert done.status_code == 200 and done.headers["upload-offset"] == str(len(data))


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


def _object_row(client: TestClient, bucket: str, key: str) -> dict[str, Any] | None:
    rows = owner_sql(
        client,
        "select blob_id, etag, size, uploaded_at from storage.objects where bucket = %s and key = %s",
        (bucket, key),
    )
    return rows[0] if rows else None


def _finished_then_crashed(
    client: TestClient, headers: dict[str, str], bucket: str, key: str, data: bytes
) -> str:
    """An upload of `data` to `key` made into its object, left as the server leaves it when it dies right
    after the object's row committed: the upload's file is still there, a name of the object's blob (linked,
    not copied), as is the blob store's incoming name. The upload's URL."""
    url = new_tus_upload(client, headers, bucket, key, len(data))
    upload_id = url.rsplit("/", 1)[1]
    patch = {**headers, **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    assert client.patch(url, content=data, headers=patch).status_code == 204
    made = _object_row(client, bucket, key)
    assert made is not None
    blobs = local_blobs(client)
    blob = blobs.blob_path(made["blob_id"])
    os.link(blob, services_of(client).storage.tus_dir / upload_id)
    os.link(blob, blobs.incoming / str(made["blob_id"]))
    return url


def _restart_storage(client: TestClient) -> None:
    """What a restarted server does first: the blob store's recovery, then the TUS uploads' cleanup."""
    storage = services_of(client).storage
    assert client.portal is not None
    client.portal.call(storage.start)
    client.portal.call(TusUploads(storage, storage.tus_dir, services_of(client).core.agent_keys).start)


@pytest.mark.parametrize("resumed_by", ["head", "patch", "head-after-restart"])
def test_upload_finished_before_a_crash_is_not_made_again(
    client: TestClient, alice: dict[str, str], new_bucket: NewBucket, resumed_by: str
) -> None:
    """The server died after the object's row committed, before the upload's file was removed; the client
    then resumes, before or after the restart. Every byte is in, yet the upload is not made into its object a
    second time (same blob, same ETag, same time): a HEAD finds it complete (offset at the end), and so does
    the next (the client may lose that answer too); a PATCH finds nothing more to take (404). The file goes,
    and the object's blob stays (with one name once restarted)."""
    bucket = new_bucket(public=False)
    data = secrets.token_bytes(20_000)
    url = _finished_then_crashed(client, alice, bucket, "crashed.bin", data)
    made = _object_row(client, bucket, "crashed.bin")
    assert made is not None
    upload_file = services_of(client).storage.tus_dir / url.rsplit("/", 1)[1]
    if resumed_by == "head-after-restart":
        _restart_storage(client)
        assert not upload_file.exists()  # the object is made: its row stays, to answer the client
    if resumed_by == "patch":
        patch = {**alice, **TUS, "Content-Type": "application/offset+octet-stream"}
        resumed = client.patch(url, content=b"", headers={**patch, "Upload-Offset": str(len(data))})
        assert resumed.status_code == 404, resumed.text
    else:
        resumed = client.head(url, headers={**alice, **TUS})
        assert resumed.status_code == 200
        assert resumed.headers["upload-offset"] == resumed.headers["upload-length"] == str(len(data))
    assert _object_row(client, bucket, "crashed.bin") == made
    again = client.head(url, headers={**alice, **TUS})
    assert again.status_code == 200 and again.headers["upload-offset"] == str(len(data))
    assert _object_row(client, bucket, "crashed.bin") == made
    assert client.get(f"{BUCKETS}/{bucket}/objects/crashed.bin", headers=alice).content == data
    assert not upload_file.exists()
    _restart_storage(client)
    blobs = local_blobs(client)
    blob = blobs.blob_path(made["blob_id"])
    assert blob.read_bytes() == data and blob.stat().st_nlink == 1
    assert list(blobs.incoming.iterdir()) == []


@pytest.mark.parametrize("meanwhile", ["replaced", "deleted"])
def test_upload_finished_before_a_crash_leaves_later_writes_alone(
    client: TestClient,
    alice: dict[str, str],
    admin: dict[str, str],
    new_bucket: NewBucket,
    meanwhile: str,
) -> None:
    """After the crash, before Alice's client resumes, the key moves on: the admin writes a newer object
    there, or Alice deletes hers. Her client's HEAD must not bring the stale upload back over it."""
    bucket = new_bucket(public=False)
    url = _finished_then_crashed(client, alice, bucket, "moved-on.bin", secrets.token_bytes(20_000))
    target = f"{BUCKETS}/{bucket}/objects/moved-on.bin"
    if meanwhile == "replaced":
        assert client.put(target, content=b"newer", headers=admin).status_code == 200
    else:
        assert client.delete(target, headers=alice).status_code == 200
    later = _object_row(client, bucket, "moved-on.bin")
    resumed = client.head(url, headers={**alice, **TUS})
    assert resumed.status_code == 200 and resumed.headers["upload-offset"] == resumed.headers["upload-length"]
    assert _object_row(client, bucket, "moved-on.bin") == later
    got = client.get(target, headers=admin)
    if meanwhile == "replaced":
        assert got.status_code == 200 and got.content == b"newer"
    else:
        assert got.status_code == 404
    assert not (services_of(client).storage.tus_dir / url.rsplit("/", 1)[1]).exists()
    _restart_storage(client)
    assert list(local_blobs(client).incoming.iterdir()) == []


def test_request_roles_mark_only_their_own_upload_finished(
    client: TestClient, alice: dict[str, str], anon: dict[str, str], new_bucket: NewBucket
) -> None:
    """The request roles have no rights on storage.tus_uploads. The functions they may call read and mark an
    upload of the caller's own, and nothing else: not another user's, not anon's as a user nor a user's as
    anon, not one twice. The rule itself they cannot call."""
    for role in ("anon", "authenticated", "project_admin"):
        rights = owner_sql(
            client,
            "select has_table_privilege(%s, 'storage.tus_uploads', 'select,insert,update,delete,truncate') "
            "as table_rights, has_function_privilege(%s, 'storage.finish_tus_upload(uuid)', 'execute') "
            "as finish, has_function_privilege(%s, 'storage.callers_tus_upload(uuid, text)', 'execute') "
            "as read, has_function_privilege(%s, 'storage.tus_upload_is_callers(text, text)', 'execute') "
            "as rule",
            (role, role, role, role),
        )
        assert rights == [{"table_rights": False, "finish": True, "read": True, "rule": False}]
    bucket = new_bucket(public=False)
    let_anon_write(client, bucket)
    alices = uuid.UUID(new_tus_upload(client, alice, bucket, "mine.bin", 3).rsplit("/", 1)[1])
    anons = uuid.UUID(new_tus_upload(client, anon, bucket, "anon.bin", 3).rsplit("/", 1)[1])
    callers = {
        "alice": Principal("authenticated", CredentialKind.JWT, ALICE_ID, claims={"sub": ALICE_ID}),
        "bob": Principal("authenticated", CredentialKind.JWT, BOB_ID, claims={"sub": BOB_ID}),
        "anon": Principal("anon", CredentialKind.ANON_KEY, claims={"role": "anon"}),
    }

    async def mark_finished(who: str, upload_id: uuid.UUID) -> None:
        async with services_of(client).core.database.as_caller(callers[who]) as cur:
            await cur.execute("select storage.finish_tus_upload(%s)", (upload_id,))

    async def sees(who: str, upload_id: uuid.UUID) -> bool:
        async with services_of(client).core.database.as_caller(callers[who]) as cur:
            await cur.execute("select id from storage.callers_tus_upload(%s, %s)", (upload_id, bucket))
            return await cur.fetchone() is not None

    assert client.portal is not None
    assert [client.portal.call(sees, who, alices) for who in callers] == [True, False, False]
    assert [client.portal.call(sees, who, anons) for who in callers] == [False, False, True]
    for who, upload_id in (("bob", alices), ("anon", alices), ("alice", anons)):
        with pytest.raises(psycopg.errors.NoDataFound):
            client.portal.call(mark_finished, who, upload_id)
    for upload_id, who in ((alices, "alice"), (anons, "anon")):
        client.portal.call(mark_finished, who, upload_id)
        with pytest.raises(psycopg.errors.NoDataFound):
            client.portal.call(mark_finished, who, upload_id)
    assert client.delete(f"{BUCKETS}/{bucket}/tus/{alices}", headers={**alice, **TUS}).status_code == 204
    assert not (services_of(client).storage.tus_dir / str(alices)).exists()
