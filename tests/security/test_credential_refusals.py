"""Every route that takes any valid credential refuses one that fails verification, or none at all, in the
words of InsForge's `verifyUser` (`backend/src/api/middlewares/auth.ts`), which guards its records, RPC,
storage, email and payments routes alike and dispatches on the credential's shape: no bearer 401
`AUTH_INVALID_CREDENTIALS` "No token provided"; `Bearer anon_...` that is not the anon key 401
`AUTH_INVALID_CREDENTIALS` "Invalid anon key"; a key (`ik_...`, or `x-api-key`) that is not the project's 401
`AUTH_INVALID_API_KEY` "Invalid API key"; any other bearer that fails verification 401 `AUTH_UNAUTHORIZED`
"Invalid token" (its `tokenManager.verifyToken`; the code on which `@insforge/sdk` refreshes and retries)."""

from __future__ import annotations

import uuid

import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, anon_headers

#: One route of each capability whose routes take any valid credential.
CREDENTIAL_ROUTES = [
    ("GET", "/api/database/records/no_such_table"),
    ("POST", "/api/database/rpc/no_such_function"),
    ("GET", "/api/storage/buckets/no-such-bucket/objects"),
    ("PUT", "/api/storage/buckets/no-such-bucket/objects/a.txt"),
    ("POST", "/api/email/send-raw"),
    ("PUT", "/api/kv/entries/notes/a"),
    ("POST", "/api/usage/mcp"),
    ("POST", "/api/agents/tokens"),
    ("POST", "/api/ai/chat/completion"),
    # (Its service then refuses a caller who is no admin, the anon key included, as `verifyAdmin` does.)
    ("POST", "/api/messaging/send"),
]

NO_TOKEN = (401, "AUTH_INVALID_CREDENTIALS", "No token provided")
INVALID_ANON_KEY = (401, "AUTH_INVALID_CREDENTIALS", "Invalid anon key")
INVALID_API_KEY = (401, "AUTH_INVALID_API_KEY", "Invalid API key")
INVALID_TOKEN = (401, "AUTH_UNAUTHORIZED", "Invalid token")


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def private_bucket(client: TestClient, admin: dict[str, str]) -> str:
    bucket = f"private-{uuid.uuid4().hex[:8]}"
    body = {"bucketName": bucket, "isPublic": False}
    created = client.post("/api/storage/buckets", json=body, headers=admin)
    assert created.status_code == 201, created.text
    return bucket


def refusal(client: TestClient, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, str]:
    response = client.request(method, path, headers=headers, json={})
    body = response.json()
    assert body["statusCode"] == response.status_code and body["nextActions"], body
    return response.status_code, body["error"], body["message"]


@pytest.mark.parametrize(("method", "path"), CREDENTIAL_ROUTES)
def test_a_route_for_any_caller_refuses_a_credential_as_verify_user_does(
    client: TestClient, method: str, path: str
) -> None:
    assert refusal(client, method, path, {}) == NO_TOKEN
    assert refusal(client, method, path, {"Authorization": "Basic dXNlcjpwYXNz"}) == NO_TOKEN
    assert refusal(client, method, path, bearer("anon_" + "0" * 32)) == INVALID_ANON_KEY
    assert refusal(client, method, path, bearer("ik_" + "0" * 64)) == INVALID_API_KEY
    assert refusal(client, method, path, {"x-api-key": "ik_wrong"}) == INVALID_API_KEY
    assert refusal(client, method, path, bearer("not-a-jwt")) == INVALID_TOKEN
    assert refusal(client, method, path, bearer("a.b.c")) == INVALID_TOKEN
    # The project's own anon key is a credential: whatever the route answers it, it is not refused as one.
    if path != "/api/messaging/send":
        answered = client.request(method, path, headers=anon_headers(client), json={})
        said = (answered.status_code, answered.json().get("error"), answered.json().get("message"))
        assert said not in (NO_TOKEN, INVALID_ANON_KEY, INVALID_API_KEY, INVALID_TOKEN), said


def test_a_private_buckets_object_needs_a_credential_as_verify_user_says(client: TestClient) -> None:
    admin = admin_headers(client)
    bucket = private_bucket(client, admin)
    put = client.put(f"/api/storage/buckets/{bucket}/objects/a.txt", files={"file": b"hi"}, headers=admin)
    assert put.status_code in (200, 201), put.text
    url = f"/api/storage/buckets/{bucket}/objects/a.txt"

    assert refusal(client, "GET", url, {}) == NO_TOKEN
    assert refusal(client, "GET", url, bearer("anon_" + "0" * 32)) == INVALID_ANON_KEY
    assert refusal(client, "GET", url, bearer("not-a-jwt")) == INVALID_TOKEN
    strategy = f"/api/storage/buckets/{bucket}/download-strategy/objects/a.txt"
    assert refusal(client, "GET", strategy, {}) == NO_TOKEN
    assert refusal(client, "GET", strategy, bearer("ik_" + "0" * 64)) == INVALID_API_KEY
    assert client.get(url, headers=admin).content == b"hi"
    # A public bucket's objects are anyone's: a credential that fails is not even looked at, as in InsForge.
    assert client.patch(f"/api/storage/buckets/{bucket}", json={"isPublic": True}, headers=admin).is_success
    assert client.get(url, headers=bearer("not-a-jwt")).content == b"hi"


def test_a_stranger_cannot_tell_a_missing_bucket_from_a_private_one(client: TestClient) -> None:
    """With no valid credential, a bucket that does not exist is refused as a private one is: a 404 would
    tell a stranger which private buckets exist."""
    admin = admin_headers(client)
    private = private_bucket(client, admin)
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    for bucket in (private, missing):
        for path in ("objects/a.txt", "download-strategy/objects/a.txt"):
            url = f"/api/storage/buckets/{bucket}/{path}"
            assert refusal(client, "GET", url, {}) == NO_TOKEN
            assert refusal(client, "GET", url, bearer("not-a-jwt")) == INVALID_TOKEN
    # A caller with a credential is told the bucket is missing.
    answer = client.get(f"/api/storage/buckets/{missing}/objects/a.txt", headers=admin)
    assert answer.status_code == 404, answer.text
