"""Access decided by RLS on storage.objects, as the caller: the default owner policies, a path policy with
`storage.foldername()`, public buckets readable by anyone, and the admin key's bypass. The matrix: anon, two
users and the admin, on a public and a private bucket, for read, write, replace, list, delete and URL minting.
"""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.storage.conftest import BUCKETS, NewBucket


def objects(bucket: str) -> str:
    return f"{BUCKETS}/{bucket}/objects"


def upload(client: TestClient, headers: dict[str, str], bucket: str, key: str, data: bytes = b"data") -> int:
    response = client.put(
        f"{objects(bucket)}/{key}", files={"file": ("f", data, "text/plain")}, headers=headers
    )
    return response.status_code


def listed(client: TestClient, headers: dict[str, str], bucket: str) -> list[str]:
    response = client.get(objects(bucket), headers=headers)
    assert response.status_code == 200, response.text
    return [o["key"] for o in response.json()["data"]]


@pytest.mark.parametrize("public", [True, False])
def test_rls_matrix(
    client: TestClient,
    admin: dict[str, str],
    anon: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
    new_bucket: NewBucket,
    public: bool,
) -> None:
    bucket = new_bucket(public=public)
    # Writes: each user their own keys; anon none (no policy lets it); admin anything.
    assert upload(client, alice, bucket, "alice.txt") == 200
    assert upload(client, bob, bucket, "bob.txt") == 200
    assert upload(client, anon, bucket, "anon.txt") == 403
    assert upload(client, {}, bucket, "nobody.txt") == 401
    assert upload(client, admin, bucket, "admin.txt") == 200
    # Replacing another's object is a write the policies forbid; the bytes stay.
    assert upload(client, bob, bucket, "alice.txt", b"bob was here") == 403
    assert upload(client, admin, bucket, "alice.txt", b"admin edit") == 200
    # Lists: each user sees their own; anon nothing; admin everything.
    assert listed(client, alice, bucket) == ["alice.txt"]
    assert listed(client, bob, bucket) == ["bob.txt"]
    assert listed(client, anon, bucket) == []
    assert listed(client, admin, bucket) == ["admin.txt", "alice.txt", "bob.txt"]
    assert client.get(objects(bucket)).status_code == 401
    # Reads: a public bucket to anyone, a private one as the policies say.
    url = f"{objects(bucket)}/alice.txt"
    expected = {
        "alice": 200,
        "bob": 200 if public else 404,
        "anon": 200 if public else 404,
        "nobody": 200 if public else 401,
        "admin": 200,
    }
    for who, headers in {"alice": alice, "bob": bob, "anon": anon, "nobody": {}, "admin": admin}.items():
        response = client.get(url, headers=headers)
        assert response.status_code == expected[who], (who, response.text)
        if response.status_code == 200:
            assert response.content == b"admin edit"
    # URL minting checks the policies first.
    strategy = f"{BUCKETS}/{bucket}/download-strategy/objects/alice.txt"
    assert client.get(strategy, headers=alice).status_code == 200
    assert client.get(strategy, headers=bob).status_code == (200 if public else 404)
    assert client.get(strategy, headers=anon).status_code == (200 if public else 404)
    # Deletes: only one's own (another's is reported not found and stays), admin anything.
    assert client.delete(url, headers=bob).status_code == 404
    many = client.request("DELETE", objects(bucket), json={"keys": ["alice.txt", "bob.txt"]}, headers=bob)
    assert many.json()["results"] == [
        {"key": "alice.txt", "status": "notFound"},
        {"key": "bob.txt", "status": "deleted"},
    ]
    assert client.delete(url, headers=anon).status_code == 404
    assert client.delete(url, headers=alice).status_code == 200
    assert client.delete(f"{objects(bucket)}/admin.txt", headers=admin).status_code == 200
    assert listed(client, admin, bucket) == []


def test_upload_strategy_checks_policies(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket(public=False)
    strategy = f"{BUCKETS}/{bucket}/upload-strategy"
    first = client.post(
        strategy, json={"filename": "mine.txt", "contentType": "text/plain", "size": 4}, headers=alice
    )
    assert first.status_code == 200
    assert first.json() == {
        "method": "direct",
        "uploadUrl": f"http://127.0.0.1:7130/api/storage/buckets/{bucket}/objects/mine.txt",
        "key": "mine.txt",
        "confirmRequired": False,
    }
    assert upload(client, alice, bucket, "mine.txt") == 200
    assert client.post(strategy, json={"filename": "mine.txt"}, headers=bob).status_code == 403
    assert client.post(strategy, json={"filename": "../x"}, headers=alice).status_code == 400
    assert client.post(strategy, json={}, headers=alice).status_code == 400
    assert (
        client.post(
            f"{BUCKETS}/nope-{bucket}/upload-strategy", json={"filename": "a"}, headers=alice
        ).status_code
        == 404
    )
    confirmed = client.post(
        f"{BUCKETS}/{bucket}/objects/mine.txt/confirm-upload", json={"size": 4}, headers=alice
    )
    assert confirmed.status_code == 200 and confirmed.json()["key"] == "mine.txt"
    hidden = client.post(f"{BUCKETS}/{bucket}/objects/mine.txt/confirm-upload", json={"size": 4}, headers=bob)
    assert hidden.status_code == 404


def test_path_policy_with_foldername(
    client: TestClient,
    admin: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
    new_bucket: NewBucket,
) -> None:
    """A project's own policy: anyone signed in may read `shared/` objects of this bucket."""
    bucket = new_bucket(public=False)
    policy = f"shared_{bucket.replace('-', '_')}"
    sql = (
        f"create policy {policy} on storage.objects for select to authenticated "
        f"using (bucket = '{bucket}' and (storage.foldername(key))[1] = 'shared' "
        f"and storage.extension(key) = 'txt' and storage.filename(key) like 'n%')"
    )
    created = client.post("/api/database/advance/rawsql/unrestricted", json={"query": sql}, headers=admin)
    assert created.status_code == 200, created.text
    assert upload(client, alice, bucket, "shared/notes.txt") == 200
    assert upload(client, alice, bucket, "shared/other.txt") == 200
    assert upload(client, alice, bucket, "private/notes.txt") == 200
    assert client.get(f"{objects(bucket)}/shared/notes.txt", headers=bob).status_code == 200
    assert client.get(f"{objects(bucket)}/shared/other.txt", headers=bob).status_code == 404
    assert client.get(f"{objects(bucket)}/private/notes.txt", headers=bob).status_code == 404
    assert listed(client, bob, bucket) == ["shared/notes.txt"]
