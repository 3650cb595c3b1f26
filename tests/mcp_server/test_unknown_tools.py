"""A call of a tool the server does not offer: the agent hears the nearest tool it may call and where the
others are listed, not a bare "Unknown tool"; a huge name is not echoed back whole."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.support.app import admin_headers, anon_headers, mcp_call


def test_a_misspelt_tool_is_refused_with_the_nearest_one_and_where_to_look(client: TestClient) -> None:
    text = mcp_call(client, admin_headers(client), "list-table", {})
    assert text.startswith("Unknown tool: list-table ")
    assert "did you mean list-tables?" in text
    assert "tools/list" in text


def test_the_nearest_tool_is_one_the_credential_may_call(client: TestClient) -> None:
    """The anon key does not see run-raw-sql, so a near miss of it is not pointed there."""
    text = mcp_call(client, anon_headers(client), "run-raw-sq", {})
    assert text.startswith("Unknown tool: run-raw-sq ")
    assert "run-raw-sql" not in text and "tools/list" in text


def test_a_huge_tool_name_is_not_echoed_back_whole(client: TestClient) -> None:
    text = mcp_call(client, admin_headers(client), "x" * 100_000, {})
    assert text.startswith("Unknown tool: xxx") and "tools/list" in text
    assert len(text) < 300
