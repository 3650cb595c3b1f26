"""Signed URLs: minted after the caller's policies allow the read, usable with no credential, expiring from
1 second to 7 days, and refused (403) when the path, the expiry or the signature is changed."""

from __future__ import annotations

import time
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

from starlette.testclient import TestClient

from kilnbase.storage.signed_urls import UrlSigner, clamp_expiry
from tests.storage.conftest import BUCKETS, NewBucket
from tests.support.app import services_of


def _path_and_query(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


def test_signed_url_needs_no_credential(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket(public=False)
    put = client.put(
        f"{BUCKETS}/{bucket}/objects/dir/secret.txt",
        files={"file": ("s", b"secret", "text/plain")},
        headers=alice,
    )
    assert put.status_code == 200
    minted = client.get(
        f"{BUCKETS}/{bucket}/download-strategy/objects/dir%2Fsecret.txt",
        params={"expiresIn": 60},
        headers=alice,
    )
    assert minted.status_code == 200, minted.text
    assert minted.headers["cache-control"] == "no-store"
    strategy = minted.json()
    assert strategy["method"] == "direct"
    expires_at = datetime.fromisoformat(strategy["expiresAt"].replace("Z", "+00:00")).timestamp()
    assert 50 < expires_at - time.time() <= 61
    path, query = _path_and_query(strategy["url"])
    fetched = client.get(path, params=query)
    assert fetched.status_code == 200 and fetched.content == b"secret"
    assert fetched.headers["cache-control"] == "private, no-store"
    # Any change is refused: another key, another expiry, another signature, or a piece missing.
    other = path.replace("secret.txt", "other.txt")
    assert client.get(other, params=query).status_code == 403
    assert client.get(path, params={**query, "expires": str(int(query["expires"]) + 1)}).status_code == 403
    tampered = query["signature"][:-1] + ("0" if query["signature"][-1] != "0" else "1")
    assert client.get(path, params={**query, "signature": tampered}).status_code == 403
    assert client.get(path, params={"expires": query["expires"]}).status_code == 403
    superscript = client.get(path, params={**query, "expires": "\u00b2"})  # a digit to str.isdigit only
    assert superscript.status_code == 403 and superscript.json()["error"] == "STORAGE_PERMISSION_DENIED"
    refused = client.get(path, params={**query, "signature": "zz"})
    assert refused.status_code == 403 and refused.json()["error"] == "STORAGE_PERMISSION_DENIED"
    # Bob may not mint one for Alice's object.
    assert (
        client.get(f"{BUCKETS}/{bucket}/download-strategy/objects/dir/secret.txt", headers=bob).status_code
        == 404
    )


def test_signed_url_expires(client: TestClient, admin: dict[str, str], new_bucket: NewBucket) -> None:
    bucket = new_bucket(public=False)
    client.put(f"{BUCKETS}/{bucket}/objects/e.txt", content=b"e", headers=admin)
    signer: UrlSigner = services_of(client).storage.signer
    expired = signer.sign(bucket, "e.txt", 1, now=time.time() - 10)
    response = client.get(f"{BUCKETS}/{bucket}/objects/e.txt?{expired.query}")
    assert response.status_code == 403
    assert "expired" in response.json()["message"]
    fresh = signer.sign(bucket, "e.txt", 5)
    assert client.get(f"{BUCKETS}/{bucket}/objects/e.txt?{fresh.query}").status_code == 200


def test_expiry_clamped_and_validated(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket
) -> None:
    assert clamp_expiry(0) == 1 and clamp_expiry(10**9) == 7 * 24 * 3600 and clamp_expiry(None) == 3600
    bucket = new_bucket(public=False)
    client.put(f"{BUCKETS}/{bucket}/objects/c.txt", content=b"c", headers=admin)
    url = f"{BUCKETS}/{bucket}/download-strategy/objects/c.txt"
    week = client.get(url, params={"expiresIn": 10**9}, headers=admin).json()
    expires_at = datetime.fromisoformat(week["expiresAt"].replace("Z", "+00:00")).timestamp()
    assert abs(expires_at - time.time() - 7 * 24 * 3600) < 5
    assert client.get(url, params={"expiresIn": "abc"}, headers=admin).status_code == 400
    legacy = client.post(
        f"{BUCKETS}/{bucket}/objects/c.txt/download-strategy", json={"expiresIn": 30}, headers=admin
    )
    assert legacy.status_code == 200 and "signature=" in legacy.json()["url"]


def test_public_bucket_gets_its_plain_url(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket(public=True)
    client.put(f"{BUCKETS}/{bucket}/objects/p.txt", content=b"p", headers=admin)
    strategy = client.get(f"{BUCKETS}/{bucket}/download-strategy/objects/p.txt").json()
    assert strategy == {
        "method": "direct",
        "url": f"http://127.0.0.1:7130/api/storage/buckets/{bucket}/objects/p.txt",
    }
