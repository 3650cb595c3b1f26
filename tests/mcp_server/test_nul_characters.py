"""A NUL character in a tool call's arguments, which PostgreSQL text cannot store: the agent hears which
argument was refused and what to do instead (400, as REST answers such a value), never the SDK's bare
"Error executing tool" that a failed audit entry left it with."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, mcp_call

PREFIX = "Error executing tool "


def _error(text: str, tool: str) -> dict[str, object]:
    assert text.startswith(f"{PREFIX}{tool}: "), text
    body: dict[str, object] = json.loads(text.removeprefix(f"{PREFIX}{tool}: "))
    return body


@pytest.mark.parametrize(
    ("tool", "arguments", "named"),
    [
        ("get-table-schema", {"tableName": "no\x00pe"}, "tableName"),
        ("get-change-request", {"changeRequestId": "x\x00"}, "changeRequestId"),
        ("search-audit-logs", {"action": "\x00"}, "action"),
        ("run-raw-sql", {"query": "select $1::text", "params": ["a\x00b"]}, "params"),
    ],
)
def test_a_nul_character_in_an_argument_is_refused_with_what_to_do(
    client: TestClient, tool: str, arguments: dict[str, object], named: str
) -> None:
    admin = admin_headers(client)
    error = _error(mcp_call(client, admin, tool, arguments), tool)
    assert error["statusCode"] == 400
    assert error["error"] == "INVALID_INPUT"
    assert "NUL" in str(error["message"]) and named in str(error["message"])
    assert "base64" in str(error["nextActions"])
