"""Numbers in a tool call that nothing downstream can hold: the agent hears which argument was refused and
why (400, INVALID_INPUT), and nothing is done, never an internal error or the SDK's bare "Error executing
tool" that a value failing deep inside the call (a bigint column, the JSON of a KV value or of the audit
entry) left it with."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, mcp_call

PREFIX = "Error executing tool "
MCP_ACCEPT = "application/json, text/event-stream"


def _error(text: str, tool: str) -> dict[str, object]:
    assert text.startswith(f"{PREFIX}{tool}: "), text
    body: dict[str, object] = json.loads(text.removeprefix(f"{PREFIX}{tool}: "))
    return body


def _raw_call(client: TestClient, headers: dict[str, str], tool: str, arguments: str) -> str:
    """A tool call whose arguments are sent as written: JSON numbers Python's encoder does not write
    (`1e400`, which a JSON parser reads as infinity)."""
    params = f'{{"name":"{tool}","arguments":{arguments}}}'
    body = f'{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}'
    response = client.post(
        "/mcp",
        headers={
            **headers,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
        content=body.encode(),
    )
    assert response.status_code == 200, response.text
    text: str = response.json()["result"]["content"][0]["text"]
    return text


@pytest.mark.parametrize(
    ("tool", "arguments", "named"),
    [
        ("set-kv-value", {"namespace": "numbers", "key": "huge", "value": 10**30}, "value"),
        ("set-kv-value", {"namespace": "numbers", "key": "nested", "value": {"a": [-(2**63) - 1]}}, "value"),
        ("increment-kv-value", {"namespace": "numbers", "key": "by", "by": "99999999999999999999"}, "by"),
        ("run-raw-sql", {"query": "select $1::numeric", "params": [2**64]}, "params"),
        ("publish-message", {"channel": "numbers", "event": "e", "payload": {"n": 10**30}}, "payload"),
    ],
)
def test_an_integer_past_64_bits_is_refused_and_nothing_is_done(
    client: TestClient, tool: str, arguments: dict[str, object], named: str
) -> None:
    admin = admin_headers(client)
    error = _error(mcp_call(client, admin, tool, arguments), tool)
    assert error["statusCode"] == 400 and error["error"] == "INVALID_INPUT"
    assert named in str(error["message"]) and "64 bits" in str(error["message"])
    assert "Nothing was done" in str(error["message"])
    assert error["nextActions"]
    stored = mcp_call(client, admin, "list-kv-keys", {"namespace": "numbers"})
    assert json.loads(stored) == {"keys": []}


def test_a_number_past_a_float_is_refused_not_stored_as_null(client: TestClient) -> None:
    admin = admin_headers(client)
    text = _raw_call(client, admin, "set-kv-value", '{"namespace":"floats","key":"inf","value":1e400}')
    error = _error(text, "set-kv-value")
    assert error["statusCode"] == 400 and "finite" in str(error["message"])
    assert json.loads(mcp_call(client, admin, "list-kv-keys", {"namespace": "floats"})) == {"keys": []}


@pytest.mark.parametrize(
    ("tool", "arguments", "named"),
    [
        ("list-users", {"offset": 2**63}, "offset"),
        ("search-audit-logs", {"offset": 2**63}, "offset"),
        ("list-messages", {"offset": 2**63}, "offset"),
        ("list-objects", {"bucketName": "numbers", "offset": 2**31}, "offset"),
        ("create-gateway-key", {"name": "past-int", "rpm": 2**31}, "rpm"),
        ("create-gateway-key", {"name": "past-int", "maxTokens": 2**31}, "maxTokens"),
        ("create-gateway-key", {"name": "past-bigint", "tokensPerDay": 2**63}, "tokensPerDay"),
        ("put-ai-limits", {"scope": "project", "subject": "*", "rpm": 2**31}, "rpm"),
        ("put-ai-limits", {"scope": "project", "subject": "*", "tpm": 2**63}, "tpm"),
    ],
)
def test_a_count_past_what_its_column_holds_is_refused_with_its_range(
    client: TestClient, tool: str, arguments: dict[str, object], named: str
) -> None:
    """The bound is in the schema `tools/list` publishes, and the refusal says what the argument takes."""
    admin = admin_headers(client)
    error = _error(mcp_call(client, admin, tool, arguments), tool)
    assert error["statusCode"] == 400 and error["error"] == "INVALID_INPUT"
    assert named in str(error["message"]) and "less than or equal to" in str(error["message"])
    assert f"{named} as an integer" in str(error["nextActions"])
    keys = json.loads(mcp_call(client, admin, "list-gateway-keys", {}))
    limits = json.loads(mcp_call(client, admin, "get-ai-limits", {}))
    assert not [key for key in keys if key["name"].startswith("past-")]
    assert limits == []
