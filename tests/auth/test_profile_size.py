"""A profile is public and merged field by field: without a bound one user stores megabytes for everyone to
fetch, a field at a time. At most 64 KB of JSON; past it, a 413 that names the limit and
changes nothing."""

from __future__ import annotations

import json
from typing import Any

from starlette.testclient import TestClient
from starlette.types import Message

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


#: The JSON surface's limit (KILNBASE_MAX_JSON_BODY_BYTES): what any body under `/api` may be.
TEN_MEGABYTES = 10 * 1024 * 1024
CHUNK = 64 * 1024


def _patch_streamed(
    client: TestClient, token: str, *, declare_length: bool
) -> tuple[int, dict[str, Any], int]:
    """A 10 MB profile sent as a client streams it, in 64 KB chunks: the status, the body, and how many bytes
    of the request the app read before it answered."""
    body = b'{"profile": {"bio": "' + b"x" * (TEN_MEGABYTES - 100) + b'"}}'
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]
    if declare_length:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PATCH",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    read = 0
    answer: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal read
        chunk = body[read : read + CHUNK]
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": read < len(body)}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    async def request() -> None:
        await client.app(scope, receive, send)

    assert client.portal is not None, "inside the client's `with` block"
    client.portal.call(request)
    return answer["status"], json.loads(answer["body"]), read


def test_a_body_far_past_the_limit_is_refused_before_it_is_read(client: TestClient) -> None:
    # 10 MB passes the JSON surface's limit; a profile's body is refused once past its own, a fraction of it.
    token = sign_up(client)["accessToken"]
    status, body, read = _patch_streamed(client, token, declare_length=False)
    assert status == 413, body
    assert f"{PROFILE_MAX_BYTES // 1024} KB" in body["message"]
    assert read <= 2 * PROFILE_MAX_BYTES + CHUNK, f"{read} bytes read to refuse it"
    status, body, read = _patch_streamed(client, token, declare_length=True)
    assert status == 413, body
    assert f"{PROFILE_MAX_BYTES // 1024} KB" in body["message"]
    assert read == 0  # its Content-Length said enough
