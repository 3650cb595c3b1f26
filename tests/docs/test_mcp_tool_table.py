"""docs/mcp.md's table of tools by feature group names every tool the server offers: the table is how an
agent key's owner learns what a scope reaches, so a tool missing from it is a scope nobody can read about."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

from tests.support.app import admin_headers, mcp_tool_names

MCP_DOC = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"
#: A row of the table: `| \`group\` | tools... |`.
_ROW = re.compile(r"^\| `[a-z_]+` \| (.+) \|$", re.M)


def documented_tools() -> set[str]:
    rows = _ROW.findall(MCP_DOC.read_text())
    return {name for row in rows for name in re.findall(r"`([a-z][a-z0-9-]+)`", row)}


def test_every_offered_tool_is_in_the_scope_table(client: TestClient) -> None:
    offered = mcp_tool_names(client, admin_headers(client))
    assert len(offered) > 50, offered  # (the API key sees every tool)
    assert offered - documented_tools() == set()
