"""The S3 backend against a real S3 server (SeaweedFS on loopback): proxy mode streams every byte through
Kilnbase, presigned mode hands out the store's URLs (a POST policy to upload, presigned GETs to download);
either way an object is wholly there or not, and nothing is left in the store that no row names."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings, StorageSettings
from tests.storage.conftest import TUS, new_tus_upload, owner_sql, s3_blobs
from tests.support.app import admin_headers, anon_headers, services_of, user_headers
from tests.support.postgres import TestCluster
from tests.support.seaweed import ACCESS_KEY, REGION, SECRET_KEY, SeaweedS3

BUCKETS = "/api/storage/buckets"
LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3(seaweed: SeaweedS3) -> object:
    client = seaweed.client()
    client.create_bucket(Bucket="kilnbase-objects")
    return client


def _app(cluster: TestCluster, tmp: Path, seaweed: SeaweedS3, *, presigned: bool) -> TestClient:
    storage = StorageSettings(
        max_file_size=LIMIT,
        s3_bucket="kilnbase-objects",
        s3_endpoint_url=seaweed.endpoint,
        s3_region=REGION,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
        s3_use_presigned_urls=presigned,
        s3_prefix=f"p{secrets.token_hex(3)}",
    )
    settings = Settings(database_url=cluster.create_database("s3"), data_dir=tmp, storage=storage)
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def proxy(
    cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedS3, s3: object
) -> Iterator[TestClient]:
    with _app(cluster, tmp_path_factory.mktemp("proxy"), seaweed, presigned=False) as client:
        yield client


@pytest.fixture(scope="module")
def presigned(
    cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedS3, s3: object
) -> Iterator[TestClient]:
    with _app(cluster, tmp_path_factory.mktemp("presigned"), seaweed, presigned=True) as client:
        yield client


def _store_keys(s3: object, client: TestClient) -> set[str]:
    prefix = s3_blobs(client).prefix
    listed = s3.list_objects_v2(Bucket="kilnbase-objects", Prefix=prefix)  # type: ignore[attr-defined]
    return {item["Key"] for item in listed.get("Contents", [])}


def _bucket(client: TestClient, public: bool = False) -> str:
    name = f"s3-{secrets.token_hex(4)}"
    assert (
        client.post(
            BUCKETS, json={"bucketName": name, "isPublic": public}, headers=admin_headers(client)
        ).status_code
        == 201
    )
    return name


def test_proxy_mode_round_trip(proxy: TestClient, s3: object) -> None:
    admin = admin_headers(proxy)
    bucket = _bucket(proxy)
    data = secrets.token_bytes(300_000)
    put = proxy.put(
        f"{BUCKETS}/{bucket}/objects/dir/data.bin",
        files={"file": ("d", data, "application/x-data")},
        headers=admin,
    )
    assert put.status_code == 200, put.text
    got = proxy.get(f"{BUCKETS}/{bucket}/objects/dir/data.bin", headers=admin)
    assert got.status_code == 200 and got.content == data
    part = proxy.get(f"{BUCKETS}/{bucket}/objects/dir/data.bin", headers={**admin, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    strategy = proxy.get(f"{BUCKETS}/{bucket}/download-strategy/objects/dir/data.bin", headers=admin).json()
    assert strategy["method"] == "direct" and "signature=" in strategy["url"]
    signed_path = strategy["url"].split("127.0.0.1:7130", 1)[1]
    assert proxy.get(signed_path).content == data
    assert len(_store_keys(s3, proxy)) == 1
    # Replacing and deleting leave nothing behind in the store.
    proxy.put(f"{BUCKETS}/{bucket}/objects/dir/data.bin", content=b"smaller", headers=admin)
    assert proxy.get(f"{BUCKETS}/{bucket}/objects/dir/data.bin", headers=admin).content == b"smaller"
    assert len(_store_keys(s3, proxy)) == 1
    assert proxy.delete(f"{BUCKETS}/{bucket}/objects/dir/data.bin", headers=admin).status_code == 200
    assert _store_keys(s3, proxy) == set()


def test_proxy_mode_size_limit_leaves_nothing(proxy: TestClient, s3: object) -> None:
    admin = admin_headers(proxy)
    bucket = _bucket(proxy)
    before = _store_keys(s3, proxy)
    too_big = proxy.put(f"{BUCKETS}/{bucket}/objects/big", content=b"x" * (LIMIT + 1), headers=admin)
    assert too_big.status_code == 413
    assert _store_keys(s3, proxy) == before
    assert proxy.get(f"{BUCKETS}/{bucket}/objects", headers=admin).json()["data"] == []


def test_dead_writer_is_swept(proxy: TestClient, s3: object) -> None:
    """A blob journalled by a process that died (nobody holds its lock) is removed at start."""
    blobs = s3_blobs(proxy)
    bucket = _bucket(proxy)
    orphan = uuid.uuid4()
    s3.put_object(Bucket="kilnbase-objects", Key=blobs.path(bucket, orphan), Body=b"orphan")  # type: ignore[attr-defined]

    async def journal_as_dead_process() -> int:
        async with services_of(proxy).core.database.as_owner() as cur:
            await cur.execute(
                "insert into storage.pending_blobs (blob_id, bucket, instance) values (%s, %s, %s)",
                (orphan, bucket, 12345),
            )
        return await blobs.sweep()

    assert proxy.portal is not None
    assert proxy.portal.call(journal_as_dead_process) >= 1
    assert blobs.path(bucket, orphan) not in _store_keys(s3, proxy)


def test_presigned_mode_sdk_flow(presigned: TestClient, s3: object) -> None:
    """What the SDK does: upload-strategy, POST the form to the store, confirm; download by redirect."""
    alice = user_headers(presigned, "3f0e6a51-9d2b-4c1e-8f7a-2b6c5d4e3f01", "alice@example.com")
    bob = user_headers(presigned, "8a1b2c3d-4e5f-4a6b-9c7d-0e1f2a3b4c5d", "bob@example.com")
    bucket = _bucket(presigned)
    strategy = presigned.post(
        f"{BUCKETS}/{bucket}/upload-strategy",
        json={"filename": "photos/cat.png", "contentType": "image/png"},
        headers=alice,
    )
    assert strategy.status_code == 200, strategy.text
    plan = strategy.json()
    assert plan["method"] == "presigned" and plan["confirmRequired"] is True
    assert plan["confirmUrl"] == f"/api/storage/buckets/{bucket}/objects/photos%2Fcat.png/confirm-upload"
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + b"\x00" * 100
    posted = httpx.post(plan["uploadUrl"], data=plan["fields"], files={"file": ("cat.png", png, "image/png")})
    assert posted.status_code in (200, 201, 204), posted.text
    assert presigned.post(plan["confirmUrl"], json={"size": len(png)}, headers=bob).status_code == 404
    confirmed = presigned.post(plan["confirmUrl"], json={"size": len(png)}, headers=alice)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["key"] == "photos/cat.png" and confirmed.json()["mimeType"] == "image/png"
    download = presigned.get(
        f"{BUCKETS}/{bucket}/objects/photos/cat.png", headers=alice, follow_redirects=False
    )
    assert download.status_code == 302
    assert httpx.get(download.headers["location"]).content == png
    assert presigned.get(f"{BUCKETS}/{bucket}/objects/photos/cat.png", headers=bob).status_code == 404
    url = presigned.get(
        f"{BUCKETS}/{bucket}/download-strategy/objects/photos%2Fcat.png",
        params={"expiresIn": 60},
        headers=alice,
    ).json()
    assert url["method"] == "presigned" and httpx.get(url["url"]).content == png
    tampered = url["url"].replace("X-Amz-Expires=60", "X-Amz-Expires=600")
    assert httpx.get(tampered).status_code == 403
    # Active types are never redirected: served here, as attachments.
    page = presigned.put(
        f"{BUCKETS}/{bucket}/objects/page.html", content=b"<html><script>1</script>", headers=alice
    )
    assert page.status_code == 200
    served = presigned.get(f"{BUCKETS}/{bucket}/objects/page.html", headers=alice, follow_redirects=False)
    assert served.status_code == 200 and served.headers["content-disposition"].startswith("attachment")


def test_presigned_upload_keeps_the_type_the_sdk_confirms(presigned: TestClient, s3: object) -> None:
    """The SDK's `upload` of a CSV in presigned mode: its confirm body `{size, contentType}` (the file's type)
    decides the stored type where the bytes do not, as the multipart part's type does for a direct upload."""
    alice = user_headers(presigned, "3f0e6a51-9d2b-4c1e-8f7a-2b6c5d4e3f01", "alice@example.com")
    bucket = _bucket(presigned)
    csv = b"name,qty\napples,3\n"
    plan = presigned.post(
        f"{BUCKETS}/{bucket}/upload-strategy",
        json={"filename": "orders.csv", "contentType": "text/csv", "size": len(csv)},
        headers=alice,
    ).json()
    form = {"file": ("orders.csv", csv, "text/csv")}
    posted = httpx.post(plan["uploadUrl"], data=plan["fields"], files=form)
    assert posted.status_code in (200, 201, 204), posted.text
    confirmed = presigned.post(
        plan["confirmUrl"], json={"size": len(csv), "contentType": "text/csv"}, headers=alice
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["mimeType"] == "text/csv"
    listed = presigned.get(f"{BUCKETS}/{bucket}/objects", headers=alice).json()["data"]
    assert [(o["key"], o["mimeType"]) for o in listed] == [("orders.csv", "text/csv")]


@pytest.mark.parametrize("claim", ["text/plain\r\nX-Injected: 1", 'text/plain; name="\u20ac"', "plain"])
def test_a_confirmed_type_no_header_can_carry_is_not_stored(
    presigned: TestClient, s3: object, claim: str
) -> None:
    """A confirm body's type is written back as `Content-Type` on every download: one with a line break, a
    letter outside Latin-1, or no subtype is not kept (the object is then `application/octet-stream`),
    and the object still downloads."""
    alice = user_headers(presigned, "3f0e6a51-9d2b-4c1e-8f7a-2b6c5d4e3f02", "alice2@example.com")
    bucket = _bucket(presigned)
    text = b"plain words"
    plan = presigned.post(
        f"{BUCKETS}/{bucket}/upload-strategy",
        json={"filename": "note.txt", "contentType": "text/plain", "size": len(text)},
        headers=alice,
    ).json()
    posted = httpx.post(plan["uploadUrl"], data=plan["fields"], files={"file": ("note.txt", text)})
    assert posted.status_code in (200, 201, 204), posted.text
    confirmed = presigned.post(plan["confirmUrl"], json={"contentType": claim}, headers=alice)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["mimeType"] == "application/octet-stream"
    url = presigned.get(
        f"{BUCKETS}/{bucket}/download-strategy/objects/note.txt", params={"expiresIn": 60}, headers=alice
    ).json()["url"]
    assert httpx.get(url).content == text


def test_presigned_upload_over_limit_refused(presigned: TestClient, s3: object) -> None:
    admin = admin_headers(presigned)
    bucket = _bucket(presigned)
    plan = presigned.post(
        f"{BUCKETS}/{bucket}/upload-strategy", json={"filename": "big.bin"}, headers=admin
    ).json()
    posted = httpx.post(plan["uploadUrl"], data=plan["fields"], files={"file": ("b", b"x" * (LIMIT + 1))})
    assert posted.status_code >= 400
    confirmed = presigned.post(plan["confirmUrl"], json={"size": LIMIT + 1}, headers=admin)
    assert confirmed.status_code in (404, 413)
    assert presigned.get(f"{BUCKETS}/{bucket}/objects", headers=admin).json()["data"] == []


def test_resumable_upload_streams_into_the_store(proxy: TestClient, s3: object) -> None:
    """A finished TUS upload cannot be linked into an S3 store: it is sent there, and the local upload file
    goes once the object is committed."""
    admin = admin_headers(proxy)
    bucket = _bucket(proxy)
    data = secrets.token_bytes(200_000)
    url = new_tus_upload(proxy, admin, bucket, "resumed/in-s3.bin", len(data))
    patch = {**admin, **TUS, "Content-Type": "application/offset+octet-stream"}
    assert proxy.patch(url, content=data[:50_000], headers={**patch, "Upload-Offset": "0"}).status_code == 204
    assert _store_keys(s3, proxy) == set()  # nothing in the store before the last byte
    assert (
        proxy.patch(url, content=data[50_000:], headers={**patch, "Upload-Offset": "50000"}).status_code
        == 204
    )
    got = proxy.get(f"{BUCKETS}/{bucket}/objects/resumed/in-s3.bin", headers=admin)
    assert got.status_code == 200 and got.content == data
    assert len(_store_keys(s3, proxy)) == 1
    assert not (services_of(proxy).storage.tus_dir / url.rsplit("/", 1)[1]).exists()
    assert proxy.delete(f"{BUCKETS}/{bucket}/objects/resumed/in-s3.bin", headers=admin).status_code == 200


def test_resumable_upload_finished_before_a_crash_is_not_sent_again(proxy: TestClient, s3: object) -> None:
    """The server died after the object's row committed, before the upload's file was removed: a HEAD finds
    the upload complete and sends nothing to the store again (same blob), and removes the file."""
    admin = admin_headers(proxy)
    bucket = _bucket(proxy)
    data = secrets.token_bytes(100_000)
    url = new_tus_upload(proxy, admin, bucket, "crashed/in-s3.bin", len(data))
    upload_id = url.rsplit("/", 1)[1]
    patch = {**admin, **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    assert proxy.patch(url, content=data, headers=patch).status_code == 204
    upload_file = services_of(proxy).storage.tus_dir / upload_id
    upload_file.write_bytes(data)  # the file goes after the commit: the crash left it
    query = "select blob_id, etag from storage.objects where bucket = %s"
    made, in_store = owner_sql(proxy, query, (bucket,)), _store_keys(s3, proxy)
    resumed = proxy.head(url, headers={**admin, **TUS})
    assert resumed.status_code == 200 and resumed.headers["upload-offset"] == str(len(data))
    assert owner_sql(proxy, query, (bucket,)) == made and _store_keys(s3, proxy) == in_store
    assert not upload_file.exists()
    assert proxy.get(f"{BUCKETS}/{bucket}/objects/crashed/in-s3.bin", headers=admin).content == data
    assert proxy.delete(f"{BUCKETS}/{bucket}/objects/crashed/in-s3.bin", headers=admin).status_code == 200


def test_refused_replacement_leaves_nothing_in_the_store(proxy: TestClient, s3: object) -> None:
    """Under an INSERT-only policy for anon, a new upload is stored; a replacement is refused, before its
    bytes are taken (REST) or after they are in the store (a TUS upload whose key was taken while it ran),
    and either way the store keeps nothing of it."""
    admin, anon = admin_headers(proxy), anon_headers(proxy)
    bucket = _bucket(proxy)
    owner_sql(
        proxy,
        f'create policy "anon_insert_{bucket}" on storage.objects for insert to anon '
        f"with check (bucket = '{bucket}')",
    )
    objects = f"{BUCKETS}/{bucket}/objects"
    assert proxy.put(f"{objects}/a.txt", content=b"anon's", headers=anon).status_code == 200
    stored = _store_keys(s3, proxy)
    assert len(stored) == 1
    assert proxy.put(f"{objects}/a.txt", content=b"again", headers=anon).status_code == 403
    url = new_tus_upload(proxy, anon, bucket, "raced.bin", 5)
    assert proxy.put(f"{objects}/raced.bin", content=b"admin's", headers=admin).status_code == 200
    stored = _store_keys(s3, proxy)
    patch = {**anon, **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    assert proxy.patch(url, content=b"late!", headers=patch).status_code == 403
    assert _store_keys(s3, proxy) == stored
    assert proxy.get(f"{objects}/raced.bin", headers=admin).content == b"admin's"
    assert proxy.get(f"{objects}/a.txt", headers=admin).content == b"anon's"
    deleted = proxy.request("DELETE", objects, json={"keys": ["a.txt", "raced.bin"]}, headers=admin)
    assert deleted.status_code == 200
    assert _store_keys(s3, proxy) == set()
