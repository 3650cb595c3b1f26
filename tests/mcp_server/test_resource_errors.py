"""A resource read that is the client's mistake (a table that does not exist, a name no table could have, a
resource the credential may not read) is the protocol's invalid params (-32602) with the API's error body,
as the SDK answers a URI no resource matches: never an internal error (-32603), which tells a client the
server failed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp.types import INVALID_PARAMS
from starlette.testclient import TestClient

from tests.support.app import admin_headers, anon_headers

MCP_ACCEPT = "application/json, text/event-stream"


def _read(client: TestClient, headers: dict[str, str], uri: str) -> dict[str, Any]:
    response = client.post(
        "/mcp",
        headers={
            **headers,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
        json={"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}},
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("kilnbase://metadata/no_such_table", "TABLE_NOT_FOUND"),
        ("kilnbase://metadata/" + "a" * 300, "INVALID_INPUT"),
        ("kilnbase://docs/nothing", "NOT_FOUND"),
    ],
)
def test_a_resource_the_client_got_wrong_is_invalid_params(client: TestClient, uri: str, code: str) -> None:
    error = _read(client, admin_headers(client), uri)["error"]
    assert error["code"] == INVALID_PARAMS
    body = json.loads(error["message"])
    assert body["error"] == code and 400 <= body["statusCode"] < 500
    assert body["nextActions"]
    assert error["data"] == {"uri": uri}


def test_a_resource_the_credential_may_not_read_is_unknown_to_it(client: TestClient) -> None:
    error = _read(client, anon_headers(client), "kilnbase://metadata")["error"]
    assert error["code"] == INVALID_PARAMS
    assert error["message"] == "Unknown resource: kilnbase://metadata"
