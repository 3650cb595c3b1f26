"""Storage tests: the app over a fresh database and data directory, the callers, and bucket names no other
test uses (each test makes the buckets and objects it reads, so the tests hold in any order)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings, StorageSettings
from kilnbase.storage.local_blobs import LocalBlobs
from kilnbase.storage.s3_blobs import S3Blobs
from tests.support.app import admin_headers, anon_headers, services_of, user_headers

BUCKETS = "/api/storage/buckets"
TUS = {"Tus-Resumable": "1.0.0"}
#: The size limit of this module's app (MAX_FILE_SIZE), small enough to pass in a test.
MAX_FILE_SIZE = 256 * 1024

NewBucket = Callable[..., str]
ALICE_ID = "0b3a4a9e-5c1d-4f0e-8a52-1f6f3c2a9d01"
BOB_ID = "7d2e9c41-0b6a-4c3f-9e85-5a4b1c0d2e02"


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        storage=StorageSettings(max_file_size=MAX_FILE_SIZE),
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


@pytest.fixture(scope="module")
def anon(client: TestClient) -> dict[str, str]:
    return anon_headers(client)


@pytest.fixture(scope="module")
def alice(client: TestClient) -> dict[str, str]:
    return user_headers(client, ALICE_ID, "alice@example.com")


@pytest.fixture(scope="module")
def bob(client: TestClient) -> dict[str, str]:
    return user_headers(client, BOB_ID, "bob@example.com")


@pytest.fixture
def new_bucket(client: TestClient, admin: dict[str, str]) -> NewBucket:
    """`new_bucket(public=False)` creates a bucket under a name no other test uses; its name."""

    def make(public: bool = True) -> str:
        name = f"b-{secrets.token_hex(5)}"
        created = client.post(BUCKETS, json={"bucketName": name, "isPublic": public}, headers=admin)
        assert created.status_code == 201, created.text
        return name

    return make


def local_blobs(client: TestClient) -> LocalBlobs:
    blobs = services_of(client).storage.blobs
    assert isinstance(blobs, LocalBlobs)
    return blobs


def s3_blobs(client: TestClient) -> S3Blobs:
    blobs = services_of(client).storage.blobs
    assert isinstance(blobs, S3Blobs)
    return blobs


def new_tus_upload(client: TestClient, headers: dict[str, str], bucket: str, key: str, length: int) -> str:
    """A new TUS upload of `length` bytes to `key`: its URL."""
    meta = "key " + base64.b64encode(key.encode()).decode()
    created = client.post(
        f"{BUCKETS}/{bucket}/tus",
        headers={**headers, **TUS, "Upload-Length": str(length), "Upload-Metadata": meta},
    )
    assert created.status_code == 201, created.text
    return created.headers["location"]


def owner_sql(client: TestClient, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Run `query` on the app's owner pool; its rows (none for a statement that returns none)."""

    async def run() -> list[dict[str, Any]]:
        async with services_of(client).core.database.as_owner() as cur:
            await cur.execute(query, params)
            return list(await cur.fetchall()) if cur.description else []

    assert client.portal is not None
    return client.portal.call(run)


def let_anon_write(client: TestClient, bucket: str) -> None:
    """Policies that let the anon role write new objects to `bucket` (an INSERT policy is all that needs)
    and read them back."""
    owner_sql(
        client,
        f'create policy "anon_write_{bucket}" on storage.objects for insert to anon '
        f"with check (bucket = '{bucket}')",
    )
    owner_sql(
        client,
        f'create policy "anon_read_{bucket}" on storage.objects for select to anon '
        f"using (bucket = '{bucket}')",
    )
