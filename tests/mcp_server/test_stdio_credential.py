"""`kilnbase mcp` (stdio) acts with the credential it was started with; that credential is checked again on
every call, so revoking it ends the session's access at once, as it would over HTTP. The MCP server runs in
process (the `mcp` client connects to it directly): services, database and agent keys are real."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer

from kilnbase.agents.service import NewAgentKey
from kilnbase.app import capabilities, resolver_of, running
from kilnbase.config import Settings
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import API_KEY_HOLDER, Principal
from kilnbase.keys.project_keys import load_project_keys
from kilnbase.mcp_server.approvals import Approvals
from kilnbase.mcp_server.server import build_server
from kilnbase.services import Services, build_core, build_services
from tests.mcp_server.test_mcp_server import text_of
from tests.support.oidc_provider import OidcProvider

pytestmark = pytest.mark.anyio

ADMIN = Actor(API_KEY_HOLDER, ip="203.0.113.8", user_agent="stdio-credential-test")


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    built = build_services(build_core(settings, load_project_keys(settings), database_url))
    async with running(built, capabilities(built), background=False):  # (as `kilnbase mcp` does)
        yield built


def stdio_server(services: Services, principal: Callable[[], Principal]) -> MCPServer:
    """The MCP server as `kilnbase mcp` builds it, acting as `principal()` on every call."""
    return build_server(
        capabilities(services),
        services.core,
        Approvals(services.core.database, services.core.agent_keys),
        services.metadata.schema_fingerprint,
        stdio_principal=principal,
    )


async def test_a_revoked_agent_key_stops_working_mid_session(services: Services) -> None:
    created = await services.agents.create_key(ADMIN, NewAgentKey(name="stdio agent", scopes=["*:read"]))
    resolver = resolver_of(services.core.keys, services)

    def principal() -> Principal:
        return resolver.resolve(f"Bearer {created['key']}", None)

    async with Client(stdio_server(services, principal)) as client:
        before = await client.call_tool("list-tables", {})
        assert not before.is_error, text_of(before)
        await services.agents.revoke_key(ADMIN, created["id"])
        after = await client.call_tool("list-tables", {})
    assert after.is_error
    assert "no longer valid" in text_of(after)
    assert "revoked" in text_of(after)


async def test_an_external_providers_token_works_from_the_first_call(services: Services) -> None:
    """A token of an external JWT provider whose keys this process has not fetched yet: the call fetches
    them (as a request over HTTP does), rather than calling the credential invalid."""
    idp = OidcProvider()
    await anyio.to_thread.run_sync(idp.start)
    try:
        body = idp.provider_body(secrets.token_hex(4))
        await services.auth.jwt_providers.create(ADMIN, body)
        token = idp.sign(idp.claims("user_2xAlice", "alice@example.com", iss=body["issuer"]))
        resolver = resolver_of(services.core.keys, services)

        def principal() -> Principal:
            return resolver.resolve(f"Bearer {token}", None)

        async with Client(stdio_server(services, principal)) as client:
            answer = await client.call_tool("fetch-docs", {"docType": "instructions"})
        assert not answer.is_error, text_of(answer)
    finally:
        await anyio.to_thread.run_sync(idp.stop)
