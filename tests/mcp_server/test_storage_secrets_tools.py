"""Storage and project-secret tools through `/mcp` on a real `kilnbase serve`: what they do, what they
refuse, and when an agent's call waits for a person."""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest

from tests.mcp_server.test_approvals import admin_api
from tests.mcp_server.test_mcp_server import agent_key, call, error_of, http_client, tool_names
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.anyio

STORAGE_TOOLS = {
    "list-buckets",
    "create-bucket",
    "update-bucket",
    "delete-bucket",
    "list-objects",
    "upload-object",
    "get-signed-url",
    "delete-objects",
}


def bucket_name() -> str:
    return f"mcp-{uuid.uuid4().hex[:10]}"


async def test_a_bucket_made_filled_and_emptied_through_tools(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    bucket = bucket_name()
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
    async with http_client(live_server, live_keys["apiKey"]) as client:
        assert await tool_names(client) >= STORAGE_TOOLS
        await call(client, "create-bucket", {"bucketName": bucket, "isPublic": False})
        listed = await call(client, "list-buckets", {})
        note = await call(
            client, "upload-object", {"bucketName": bucket, "key": "notes/a.txt", "text": "hello"}
        )
        image = await call(
            client, "upload-object", {"bucketName": bucket, "key": "img/b.png", "base64Data": png}
        )
        objects = await call(client, "list-objects", {"bucketName": bucket, "prefix": "notes/"})
        signed = await call(client, "get-signed-url", {"bucketName": bucket, "key": "notes/a.txt"})
        downloaded = httpx.get(signed["url"]).text  # no credential: the URL is enough
        await call(client, "update-bucket", {"bucketName": bucket, "isPublic": True})
        public = await call(client, "get-signed-url", {"bucketName": bucket, "key": "notes/a.txt"})
        deleted = await call(
            client, "delete-objects", {"bucketName": bucket, "keys": ["notes/a.txt", "nothing.txt"]}
        )
        after = await call(client, "list-objects", {"bucketName": bucket})
    assert {"name": bucket, "public": False} in [{"name": b["name"], "public": b["public"]} for b in listed]
    assert note["size"] == 5 and note["key"] == "notes/a.txt"
    assert image["mimeType"] == "image/png"
    assert [o["key"] for o in objects["data"]] == ["notes/a.txt"]
    assert "signature=" in signed["url"] and signed["expiresAt"]
    assert downloaded == "hello"
    assert "signature=" not in public["url"]
    assert deleted["results"] == [
        {"key": "notes/a.txt", "status": "deleted"},
        {"key": "nothing.txt", "status": "notFound"},
    ]
    assert [o["key"] for o in after["data"]] == ["img/b.png"]


async def test_upload_tool_refusals(live_server: ServerProcess, live_keys: dict[str, str]) -> None:
    bucket = bucket_name()
    async with http_client(live_server, live_keys["apiKey"]) as client:
        await call(client, "create-bucket", {"bucketName": bucket})
        both = await client.call_tool(
            "upload-object", {"bucketName": bucket, "key": "a", "text": "x", "base64Data": "eA=="}
        )
        bad = await client.call_tool("upload-object", {"bucketName": bucket, "key": "a", "base64Data": "!!"})
        missing = await client.call_tool(
            "upload-object", {"bucketName": bucket_name(), "key": "a", "text": "x"}
        )
        again = await client.call_tool("create-bucket", {"bucketName": bucket})
    assert error_of(both)["statusCode"] == 400
    assert "base64" in error_of(bad)["message"]
    assert error_of(missing)["statusCode"] == 404
    assert error_of(again)["statusCode"] == 409


async def test_the_anon_key_sees_object_tools_but_no_bucket_tools(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    bucket = bucket_name()
    async with http_client(live_server, live_keys["apiKey"]) as client:
        await call(client, "create-bucket", {"bucketName": bucket, "isPublic": False})
        await call(client, "upload-object", {"bucketName": bucket, "key": "a.txt", "text": "a"})
    async with http_client(live_server, live_keys["anonKey"]) as client:
        names = await tool_names(client)
        listed = await call(client, "list-objects", {"bucketName": bucket})
        refused = await client.call_tool("upload-object", {"bucketName": bucket, "key": "b.txt", "text": "b"})
    assert {"list-objects", "upload-object"} <= names
    assert not ({"create-bucket", "delete-bucket", "list-buckets"} & names)
    assert listed["data"] == []  # RLS: anon sees no object of a private bucket
    assert error_of(refused)["statusCode"] == 403


async def test_an_agent_deleting_a_bucket_with_objects_waits_for_approval(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    full, empty = bucket_name(), bucket_name()
    agent = agent_key(live_server, live_keys["apiKey"], ["storage:write"])
    async with http_client(live_server, agent) as client:
        await call(client, "create-bucket", {"bucketName": full})
        await call(client, "create-bucket", {"bucketName": empty})
        await call(client, "upload-object", {"bucketName": full, "key": "k.txt", "text": "k"})
        gone = await call(client, "delete-bucket", {"bucketName": empty})
        held = await call(client, "delete-bucket", {"bucketName": full})
        names = [b["name"] for b in await call(client, "list-buckets", {})]
    assert gone["bucket"] == empty and empty not in names
    assert held["status"] == "pending_approval"
    assert "1 object" in held["reason"]
    assert full in names
    approved = admin_api(
        live_server, live_keys, "POST", f"/api/approvals/{held['changeRequestId']}/approve", json={}
    )
    assert approved.status_code == 200, approved.text
    buckets = admin_api(live_server, live_keys, "GET", "/api/storage/buckets").json()
    assert full not in str(buckets)


async def test_secrets_through_tools_never_show_a_value(
    live_server: ServerProcess, live_keys: dict[str, str]
) -> None:
    key = f"MCP_{uuid.uuid4().hex[:8].upper()}"
    async with http_client(live_server, live_keys["apiKey"]) as client:
        created = await call(client, "create-secret", {"key": key, "secretValue": "s3cr3t-value"})
        listed = await call(client, "list-secrets", {})
        duplicate = await client.call_tool("create-secret", {"key": key, "secretValue": "x"})
        await call(client, "delete-secret", {"key": key})
        after = await call(client, "list-secrets", {})
    assert created["success"] is True
    [entry] = [s for s in listed["secrets"] if s["key"] == key]
    assert "s3cr3t-value" not in str(listed)
    assert entry["isActive"] is True
    assert error_of(duplicate)["statusCode"] == 409
    assert [s["isActive"] for s in after["secrets"] if s["key"] == key] == [False]
    audits = admin_api(
        live_server, live_keys, "GET", "/api/logs/audits", params={"limit": 100, "action": "TOOL_CALL"}
    ).json()
    assert "s3cr3t-value" not in str(audits)
