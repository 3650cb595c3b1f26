"""What a tool call's audit entry keeps of its arguments: the call, whole enough to replay, without the
credentials it carried. A request header (`Authorization`, `Cookie`, an API key header) is a credential
however its value is spelt; the audit log is read by every key with `logs:read`."""

from __future__ import annotations

import json
import secrets

import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, mcp_call


@pytest.mark.parametrize("header", ["Authorization", "Cookie", "X-Api-Key", "Proxy-Authorization"])
def test_a_credential_in_a_header_argument_stays_out_of_the_audit(client: TestClient, header: str) -> None:
    admin = admin_headers(client)
    credential = f"sk_live_{secrets.token_hex(8)}"
    name = f"nightly-{secrets.token_hex(3)}"
    created = mcp_call(
        client,
        admin,
        "create-schedule",
        {
            "name": name,
            "cronSchedule": "0 3 * * *",
            "functionUrl": "https://example.com/hook",
            "headers": {header: f"Bearer {credential}", "X-Trace": "kept"},
        },
    )
    assert not created.startswith("Error"), created
    entries = client.get(
        "/api/logs/audits", params={"action": "TOOL_CALL", "limit": 1000}, headers=admin
    ).json()
    [entry] = [e for e in entries if e["details"].get("arguments", {}).get("name") == name]
    assert credential not in json.dumps(entry)
    assert entry["details"]["arguments"]["headers"]["X-Trace"] == "kept"
