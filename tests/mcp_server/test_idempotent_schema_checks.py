"""`idempotencyKey` with `expectedSchemaVersion`: a schema change retried with its key gets its first result
back, though the change itself moved the schema past the version it named (the retry is the same call, not a
new one against a stale schema); a call refused for a stale version keeps no result under its key, so the
same call with the current version runs."""

from __future__ import annotations

import json
import secrets

from starlette.testclient import TestClient

from tests.support.app import admin_headers, mcp_call


def fingerprint(client: TestClient, admin: dict[str, str]) -> str:
    metadata = json.loads(mcp_call(client, admin, "get-backend-metadata", {}))
    version: str = metadata["schemaFingerprint"]
    return version


def test_a_schema_change_retried_with_its_key_gets_its_first_result(client: TestClient) -> None:
    admin = admin_headers(client)
    name = f"retried_{secrets.token_hex(4)}"
    call: dict[str, object] = {
        "query": f"create table {name} (id int)",
        "idempotencyKey": secrets.token_hex(8),
        "expectedSchemaVersion": fingerprint(client, admin),
    }
    first = mcp_call(client, admin, "run-raw-sql", call)
    again = mcp_call(client, admin, "run-raw-sql", call)  # (its answer was lost: the agent retries)
    assert not first.startswith("Error"), first
    assert again == first


def test_a_call_refused_for_a_stale_version_keeps_nothing_under_its_key(client: TestClient) -> None:
    admin = admin_headers(client)
    stale = fingerprint(client, admin)
    mcp_call(client, admin, "run-raw-sql", {"query": f"create table moved_{secrets.token_hex(4)} (id int)"})
    name = f"later_{secrets.token_hex(4)}"
    call = {"query": f"create table {name} (id int)", "idempotencyKey": secrets.token_hex(8)}
    refused = mcp_call(client, admin, "run-raw-sql", {**call, "expectedSchemaVersion": stale})
    assert "SCHEMA_CHANGED" in refused
    current = fingerprint(client, admin)
    ran = mcp_call(client, admin, "run-raw-sql", {**call, "expectedSchemaVersion": current})
    assert not ran.startswith("Error"), ran
    tables = json.loads(mcp_call(client, admin, "list-tables", {}))
    assert name in json.dumps(tables)
