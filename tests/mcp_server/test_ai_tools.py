"""Gateway administration tools through `/mcp` on a real `kilnbase serve`: configurations, gateway keys
and limits, checked as `/api/ai` checks them, with the new key kept out of the audit log."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.mcp_server.test_approvals import admin_api
from tests.mcp_server.test_mcp_server import call, error_of, http_client, tool_names
from tests.support.app import admin_headers, mcp_call
from tests.support.servers import ServerProcess, free_port

pytestmark = pytest.mark.anyio


async def test_a_configuration_made_changed_and_removed_through_tools(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    model = f"test/mcp-{secrets.token_hex(4)}"
    async with http_client(live_server, live_keys["apiKey"]) as client:
        created = await call(
            client, "create-ai-configuration", {"modelId": model, "systemPrompt": "Be brief."}
        )
        again = await client.call_tool("create-ai-configuration", {"modelId": model})
        await call(
            client,
            "update-ai-configuration",
            {"id": created["id"], "systemPrompt": "Be kind.", "fallbackModels": ["test/other"]},
        )
        nothing = await client.call_tool("update-ai-configuration", {"id": created["id"]})
        listed = await call(client, "list-ai-configurations", {})
        await call(client, "delete-ai-configuration", {"id": created["id"]})
        gone = await client.call_tool("delete-ai-configuration", {"id": created["id"]})
        after = await call(client, "list-ai-configurations", {})
    [config] = [c for c in listed if c["id"] == created["id"]]
    assert config["modelId"] == model
    assert config["systemPrompt"] == "Be kind."
    assert error_of(again)["statusCode"] == 409
    assert error_of(nothing)["statusCode"] == 400
    assert error_of(gone)["statusCode"] == 404
    assert created["id"] not in [c["id"] for c in after]


async def test_gateway_keys_and_limits_through_tools(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    name = f"app-{secrets.token_hex(4)}"
    async with http_client(live_server, live_keys["apiKey"]) as client:
        names = await tool_names(client)
        created = await call(client, "create-gateway-key", {"name": name, "rpm": 5, "usdPerDay": 1.5})
        keys = await call(client, "list-gateway-keys", {})
        limits = await call(
            client,
            "put-ai-limits",
            {"scope": "key", "subject": created["id"], "tpm": 1000, "usdPerMonth": 20},
        )
        all_limits = await call(client, "get-ai-limits", {})
        bad_scope = await client.call_tool("put-ai-limits", {"scope": "project", "subject": "x", "rpm": 1})
        negative = await client.call_tool("put-ai-limits", {"scope": "project", "subject": "*", "rpm": -1})
        await call(client, "revoke-gateway-key", {"id": created["id"]})
        twice = await client.call_tool("revoke-gateway-key", {"id": created["id"]})
        revoked = await call(client, "list-gateway-keys", {})
    assert {"create-gateway-key", "put-ai-limits", "get-ai-limits", "revoke-gateway-key"} <= names
    assert created["apiKey"].startswith("kbk_")
    [listed] = [k for k in keys if k["id"] == created["id"]]
    assert listed["limits"]["rpm"] == 5 and created["apiKey"] not in str(keys)
    assert limits["tpm"] == 1000
    assert any(entry["subject"] == created["id"] and entry["tpm"] == 1000 for entry in all_limits)
    assert error_of(bad_scope)["statusCode"] == 400
    assert error_of(negative)["statusCode"] == 400  # checked against the tool's schema, before it runs
    assert "rpm as an integer from 0 to 2147483647" in error_of(negative)["nextActions"]
    assert error_of(twice)["statusCode"] == 404
    assert [k["revokedAt"] is not None for k in revoked if k["id"] == created["id"]] == [True]
    audits = admin_api(
        live_server, live_keys, "GET", "/api/logs/audits", params={"limit": 200, "action": "TOOL_CALL"}
    ).json()
    assert created["apiKey"] not in str(audits)


async def test_the_anon_key_sees_no_gateway_administration(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    async with http_client(live_server, live_keys["anonKey"]) as client:
        names = await tool_names(client)
    assert not ({"create-gateway-key", "put-ai-limits", "create-ai-configuration"} & names)


def test_a_model_catalog_out_of_reach_is_the_gateways_error_not_an_unexpected_one(
    database_url: str, tmp_path: Path
) -> None:
    """OpenRouter does not answer (nothing listens on its port) and no catalog is cached: `list-models`
    says so as `GET /api/ai/models` does (502, retry, check the credentials), not as a fault of the server's
    logged as an unexpected error."""
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path,
        openrouter_base_url=f"http://127.0.0.1:{free_port()}",
        openrouter_api_key="sk-or-v1-unreachable",
        ai_retry_base_delay=0.01,
        ai_retry_max_delay=0.05,
    )
    with TestClient(create_app(settings)) as client:
        text = mcp_call(client, admin_headers(client), "list-models", {})
    error = json.loads(text.removeprefix("Error executing tool list-models: "))
    assert error["statusCode"] == 502 and error["error"] != "INTERNAL_ERROR"
    assert "catalog" in error["message"]
    assert "Gateway Credentials" in error["nextActions"]
