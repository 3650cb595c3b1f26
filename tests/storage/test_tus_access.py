"""Who may continue a resumable (TUS) upload: the kind of caller that created it, through its URL. A user's
upload is that user's; an anon upload (the anon key, where a bucket's policies let anon write) is the anon
role's, whose unguessable URL is all that tells one anon client from another; an admin's is the admin's.
Create, HEAD, PATCH and DELETE apply the one rule, and nobody else learns the upload exists (404)."""

from __future__ import annotations

import secrets

import pytest
from starlette.testclient import TestClient

from tests.storage.conftest import BUCKETS, TUS, NewBucket, let_anon_write, new_tus_upload, owner_sql

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
