"""Who may continue a resumable (TUS) upload: the kind of caller that created it, through its URL. A user's
upload is that user's; an anon upload (the anon key, where a bucket's policies let anon write) is the anon
role's, whose unguessable URL is all that tells one anon client from another; an admin's is the admin's.
Create, HEAD, PATCH and DELETE apply the one rule, and nobody else learns the upload exists (404). A HEAD
that finishes a complete upload writes its object, so it does so only for a caller who may write."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.storage.conftest import (
    BUCKETS,
    TUS,
    NewBucket,
    let_anon_write,
    local_blobs,
    new_tus_upload,
    owner_sql,
)
from tests.support.app import agent_headers, services_of

PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}


@pytest.fixture
def anon_bucket(client: TestClient, new_bucket: NewBucket) -> str:
    """A private bucket whose policies let the anon role write (and read what it wrote)."""
    bucket = new_bucket(public=False)
    let_anon_write(client, bucket)
    return bucket


def _patch(client: TestClient, url: str, headers: dict[str, str], offset: int, data: bytes) -> int:
    answer = client.patch(url, content=data, headers={**headers, **PATCH, "Upload-Offset": str(offset)})
    return answer.status_code


def test_anon_continues_the_upload_it_created(
    client: TestClient, anon: dict[str, str], admin: dict[str, str], anon_bucket: str
) -> None:
    data = secrets.token_bytes(30_000)
    url = new_tus_upload(client, anon, anon_bucket, "drop/report.bin", len(data))
    assert _patch(client, url, anon, 0, data[:10_000]) == 204
    offset = client.head(url, headers={**anon, **TUS})
    assert offset.status_code == 200 and offset.headers["upload-offset"] == "10000"
    assert _patch(client, url, anon, 10_000, data[10_000:]) == 204
    got = client.get(f"{BUCKETS}/{anon_bucket}/objects/drop/report.bin", headers=admin)
    assert got.status_code == 200 and got.content == data
    done = client.head(url, headers={**anon, **TUS})
    assert done.status_code == 200 and done.headers["upload-offset"] == str(len(data))
    # A zero-length upload is its object at creation, for anon too.
    new_tus_upload(client, anon, anon_bucket, "drop/empty.bin", 0)
    empty = client.get(f"{BUCKETS}/{anon_bucket}/objects/drop/empty.bin", headers=admin)
    assert empty.status_code == 200 and empty.content == b""


def test_anon_abandons_the_upload_it_created(
    client: TestClient, anon: dict[str, str], admin: dict[str, str], anon_bucket: str
) -> None:
    url = new_tus_upload(client, anon, anon_bucket, "drop/abandoned.bin", 5)
    assert _patch(client, url, anon, 0, b"ab") == 204
    assert client.delete(url, headers={**anon, **TUS}).status_code == 204
    assert client.head(url, headers={**anon, **TUS}).status_code == 404
    assert client.get(f"{BUCKETS}/{anon_bucket}/objects/drop/abandoned.bin", headers=admin).status_code == 404


def _untouchable(client: TestClient, url: str, headers: dict[str, str]) -> None:
    """`headers`' caller can neither see, continue nor abandon the upload at `url`: 404, as for none."""
    head = client.head(url, headers={**headers, **TUS})
    assert head.status_code == 404
    patch = client.patch(url, content=b"x", headers={**headers, **PATCH, "Upload-Offset": "0"})
    assert patch.status_code == 404 and patch.json()["nextActions"], patch.text
    assert client.delete(url, headers={**headers, **TUS}).status_code == 404


def test_an_upload_is_continued_only_by_the_kind_of_caller_that_created_it(
    client: TestClient,
    anon: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
    admin: dict[str, str],
    anon_bucket: str,
) -> None:
    """Anon's upload is not a user's nor the admin's to continue; a user's is not anon's nor another user's;
    the admin's is not anon's nor a user's. Without a credential, 401. Each upload is untouched after."""
    anons = new_tus_upload(client, anon, anon_bucket, "drop/anon.bin", 3)
    alices = new_tus_upload(client, alice, anon_bucket, "drop/alice.bin", 3)
    admins = new_tus_upload(client, admin, anon_bucket, "drop/admin.bin", 3)
    for url, others in (
        (anons, (alice, admin)),
        (alices, (anon, bob, admin)),
        (admins, (anon, alice)),
    ):
        for headers in others:
            _untouchable(client, url, headers)
        nobody = client.head(url, headers=TUS)
        assert nobody.status_code == 401
    for url, creator in ((anons, anon), (alices, alice), (admins, admin)):
        still = client.head(url, headers={**creator, **TUS})
        assert still.status_code == 200 and still.headers["upload-offset"] == "0"
        assert _patch(client, url, creator, 0, b"abc") == 204
    for key in ("anon", "alice", "admin"):
        got = client.get(f"{BUCKETS}/{anon_bucket}/objects/drop/{key}.bin", headers=admin)
        assert got.content == b"abc"


def test_anon_still_needs_a_policy_to_upload(
    client: TestClient, anon: dict[str, str], new_bucket: NewBucket
) -> None:
    """Without a policy that lets anon write, anon cannot create an upload (403), as for any upload."""
    bucket = new_bucket(public=True)
    created = client.post(f"{BUCKETS}/{bucket}/tus", headers={**anon, **TUS, "Upload-Length": "3"})
    assert created.status_code == 403 and created.json()["nextActions"]


def test_anon_upload_finishes_only_while_the_policy_allows(
    client: TestClient, anon: dict[str, str], admin: dict[str, str], anon_bucket: str
) -> None:
    """The object is written as anon when the last byte arrives: a policy dropped meanwhile refuses it."""
    url = new_tus_upload(client, anon, anon_bucket, "drop/late.bin", 3)
    owner_sql(client, f'drop policy "anon_write_{anon_bucket}" on storage.objects')
    assert _patch(client, url, anon, 0, b"abc") == 403
    assert client.get(f"{BUCKETS}/{anon_bucket}/objects/drop/late.bin", headers=admin).status_code == 404


def _stored_files(client: TestClient) -> set[Path]:
    blobs = local_blobs(client)
    return {p for root in (blobs.blobs, blobs.incoming) for p in root.rglob("*") if p.is_file()}


def _complete_but_never_made(
    client: TestClient, admin: dict[str, str], bucket: str, key: str, data: bytes
) -> str:
    """The admin's upload of `data` to `key` as a server that died while writing its last PATCH leaves it:
    every byte in its file, no object made. The upload's URL."""
    url = new_tus_upload(client, admin, bucket, key, len(data))
    half = len(data) // 2
    assert _patch(client, url, admin, 0, data[:half]) == 204
    with (services_of(client).storage.tus_dir / url.rsplit("/", 1)[1]).open("ab") as file:
        file.write(data[half:])
    return url


def _only_told_the_offset(
    client: TestClient, url: str, headers: dict[str, str], bucket: str, key: str, length: int
) -> None:
    """`headers`' HEAD says the upload is complete, and makes nothing: no object, no row, no stored file."""
    before = _stored_files(client)
    head = client.head(url, headers={**headers, **TUS})
    assert head.status_code == 200 and head.headers["upload-offset"] == str(length)
    rows = owner_sql(client, "select 1 from storage.objects where bucket = %s and key = %s", (bucket, key))
    assert rows == []
    assert _stored_files(client) == before


@pytest.fixture
def agents_read_only(client: TestClient, admin: dict[str, str]) -> Iterator[None]:
    """The project in read-only mode for agents, for one test."""
    assert client.put("/api/agents/settings", headers=admin, json={"readOnly": True}).status_code == 200
    try:
        yield
    finally:
        client.put("/api/agents/settings", headers=admin, json={"readOnly": False})


def test_a_read_only_agent_key_cannot_finish_an_upload_by_head(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket
) -> None:
    """An admin's upload is any admin credential's to continue, an agent key's too; but an agent key with
    only `storage:read` may not write, and finishing the upload writes its object. Its HEAD only reports
    the offset; the admin's next HEAD still makes the object."""
    bucket = new_bucket(public=False)
    data = secrets.token_bytes(20_000)
    url = _complete_but_never_made(client, admin, bucket, "report.bin", data)
    reader = agent_headers(client, admin, ["storage:read"], "reader")
    _only_told_the_offset(client, url, reader, bucket, "report.bin", len(data))
    finished = client.head(url, headers={**admin, **TUS})
    assert finished.status_code == 200 and finished.headers["upload-offset"] == str(len(data))
    got = client.get(f"{BUCKETS}/{bucket}/objects/report.bin", headers=reader)
    assert got.status_code == 200 and got.content == data


def test_no_agent_finishes_an_upload_by_head_in_read_only_mode(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket, agents_read_only: None
) -> None:
    """Read-only mode refuses every agent's change: a `storage:write` key's PATCH is refused, and its HEAD,
    which the mode lets through as a read, does not make the object either."""
    bucket = new_bucket(public=False)
    data = secrets.token_bytes(20_000)
    url = _complete_but_never_made(client, admin, bucket, "ledger.bin", data)
    writer = agent_headers(client, admin, ["storage:write"], "writer")
    refused = client.patch(url, content=b"", headers={**writer, **PATCH, "Upload-Offset": str(len(data))})
    assert refused.status_code == 403 and refused.json()["error"] == "AGENT_READ_ONLY"
    _only_told_the_offset(client, url, writer, bucket, "ledger.bin", len(data))
