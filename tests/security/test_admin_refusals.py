"""Every admin route of the API refuses a caller who is no admin in the words of InsForge's `verifyAdmin`
(`backend/src/api/middlewares/auth.ts`), which guards its admin routes all alike: no bearer 401
`AUTH_INVALID_CREDENTIALS` "No admin token provided"; the anon key or a token that fails verification 401
`AUTH_UNAUTHORIZED` "Invalid token" (its `tokenManager.verifyToken`; the code on which `@insforge/sdk`
refreshes and retries); a key that is not the project's 401 `AUTH_INVALID_API_KEY` "Invalid API key"; a
signed-in user's token 403 `AUTH_UNAUTHORIZED` "Admin access required"."""

from __future__ import annotations

import uuid

import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, anon_headers, user_headers

#: One admin route of each capability that has them, read by GET (a refusal changes nothing either way).
ADMIN_ROUTES = [
    "/api/database/tables",
    "/api/secrets",
    "/api/functions",
    "/api/schedules",
    "/api/advisor/issues",
    "/api/config",
    "/api/logs/audits",
    "/api/agents/keys",
    "/api/ai/configurations",
    "/api/metadata",
    "/api/metadata/project-id",
    "/api/storage/s3/config",
]


def refusal(client: TestClient, path: str, headers: dict[str, str]) -> tuple[int, str, str]:
    response = client.get(path, headers=headers)
    body = response.json()
    assert body["statusCode"] == response.status_code and body["nextActions"], body
    return response.status_code, body["error"], body["message"]


@pytest.mark.parametrize("path", ADMIN_ROUTES)
def test_an_admin_route_refuses_each_other_caller_as_verify_admin_does(client: TestClient, path: str) -> None:
    assert client.get(path, headers=admin_headers(client)).status_code == 200

    assert refusal(client, path, {}) == (401, "AUTH_INVALID_CREDENTIALS", "No admin token provided")
    assert refusal(client, path, anon_headers(client)) == (401, "AUTH_UNAUTHORIZED", "Invalid token")
    assert refusal(client, path, {"Authorization": "Bearer not-a-jwt"}) == (
        401,
        "AUTH_UNAUTHORIZED",
        "Invalid token",
    )
    assert refusal(client, path, {"Authorization": "Bearer ik_" + "0" * 64}) == (
        401,
        "AUTH_INVALID_API_KEY",
        "Invalid API key",
    )
    user = user_headers(client, str(uuid.uuid4()), "someone@example.com")
    assert refusal(client, path, user) == (403, "AUTH_UNAUTHORIZED", "Admin access required")
