"""A profile is public and merged field by field: without a bound one user stores megabytes for everyone to
fetch, a field at a time. At most 64 KB of JSON; past it, a 413 that names the limit and
changes nothing."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.auth.conftest import sign_up

PATH = "/api/auth/profiles/current"
#: The documented limit (`kilnbase.auth.accounts.PROFILE_MAX_BYTES`).
PROFILE_MAX_BYTES = 64 * 1024


def _patch(client: TestClient, token: str, profile: dict[str, Any]) -> Any:
    return client.patch(PATH, json={"profile": profile}, headers={"Authorization": f"Bearer {token}"})


def _refused(response: Any) -> None:
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["error"] == "PAYLOAD_TOO_LARGE" and body["statusCode"] == 413
    assert f"{PROFILE_MAX_BYTES // 1024} KB" in body["message"]


def test_a_large_profile_is_refused_and_changes_nothing(client: TestClient) -> None:
    session = sign_up(client)
    user_id, token = session["user"]["id"], session["accessToken"]
    _refused(_patch(client, token, {"bio": "x" * (1024 * 1024)}))
    assert "bio" not in client.get(f"/api/auth/profiles/{user_id}").json()["profile"]


def test_a_profile_cannot_grow_past_the_limit_a_field_at_a_time(client: TestClient) -> None:
    session = sign_up(client)
    user_id, token = session["user"]["id"], session["accessToken"]
    chunk = "y" * (PROFILE_MAX_BYTES // 4)
    for n in range(3):
        assert _patch(client, token, {f"part{n}": chunk}).status_code == 200
    _refused(_patch(client, token, {"part3": chunk, "part4": chunk}))
    profile = client.get(f"/api/auth/profiles/{user_id}").json()["profile"]
    assert {"part0", "part1", "part2"} <= set(profile) and "part3" not in profile
    # Making room is possible: a large field set to null.
    assert _patch(client, token, {"part0": None, "part3": chunk}).status_code == 200
