"""`download-template`, the step `@insforge/mcp` calls mandatory for a new project, on Kilnbase's own MCP
server: the command that scaffolds InsForge's starter app against this server (its URL and anon key), as
InsForge's remote MCP server answers it; a project name that is not one directory name is refused."""

from __future__ import annotations

import json
import shlex

import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, agent_headers, mcp_call, services_of


def test_the_command_scaffolds_the_starter_app_against_this_server(client: TestClient) -> None:
    admin = admin_headers(client)
    anon_key = json.loads(mcp_call(client, admin, "get-anon-key", {}))["anonKey"]
    base_url = services_of(client).core.settings.base_url
    answer = json.loads(mcp_call(client, admin, "download-template", {"frame": "nextjs"}))
    assert shlex.split(answer["command"]) == [
        "npx",
        "create-insforge-app",
        "insforge-nextjs",
        "--frame",
        "nextjs",
        "--base-url",
        base_url,
        "--anon-key",
        anon_key,
    ]
    assert answer["directory"] == "insforge-nextjs"
    assert answer["command"] in answer["message"] and "cd insforge-nextjs" in answer["message"]

    reader = agent_headers(client, admin, ["secrets:read"])
    named = json.loads(
        mcp_call(client, reader, "download-template", {"frame": "react", "projectName": "shop"})
    )
    assert shlex.split(named["command"])[2:5] == ["shop", "--frame", "react"]


@pytest.mark.parametrize("project_name", ["../elsewhere", "..", "a b", "x;rm -rf ~"])
def test_a_project_name_that_is_not_one_directory_is_refused(client: TestClient, project_name: str) -> None:
    text = mcp_call(
        client, admin_headers(client), "download-template", {"frame": "react", "projectName": project_name}
    )
    error = json.loads(text[text.index("{") :])
    assert error["statusCode"] == 400 and error["error"] == "INVALID_INPUT"
    assert "projectName" in error["message"]
    assert error["nextActions"]
