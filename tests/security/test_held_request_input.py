"""An agent's REST request that the approval gate would hold, with a body its tool cannot take: refused at
once with 400 and what to send, never a 500 and never a change request. A person would otherwise be asked to
approve "deletes 3 user(s)" for `{"userIds": "abc"}`, a call that could only fail once approved."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.support.app import agent_headers


@pytest.fixture(scope="module")
def writer(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    return agent_headers(client, admin, ["*:write"], "sloppy")


def pending(client: TestClient, admin: dict[str, str]) -> list[str]:
    listed = client.get("/api/approvals", params={"status": "pending", "limit": 200}, headers=admin)
    assert listed.status_code == 200, listed.text
    return [request["id"] for request in listed.json()]


@pytest.mark.parametrize(
    ("method", "path", "body", "named"),
    [
        ("DELETE", "/api/auth/users", {"userIds": 5}, "userIds"),
        ("DELETE", "/api/auth/users", {"userIds": "abc"}, "userIds"),
        ("POST", "/api/database/advance/rawsql", {"query": "drop table nowhere", "params": "zz"}, "params"),
        ("POST", "/api/messaging/send", {"to": 5, "subject": "hi", "body": "hello"}, "to"),
    ],
    ids=["number-of-users", "text-of-users", "params-not-a-list", "address-not-text"],
)
def test_a_held_request_that_its_tool_cannot_take_is_a_400(
    client: TestClient,
    admin: dict[str, str],
    writer: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any],
    named: str,
) -> None:
    before = pending(client, admin)
    refused = client.request(method, path, headers=writer, json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()
    assert error["error"] == "INVALID_INPUT"
    assert named in error["message"] and "Nothing was done" in error["message"]
    assert named in error["nextActions"]
    assert pending(client, admin) == before
