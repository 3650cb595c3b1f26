"""Agent keys invoking functions over REST: invoking is a right of its own, `functions:invoke` (any method),
apart from managing functions (`functions:write`). Keys stored before it keep their reach: a write scope
invokes with any method, a read scope with GET and HEAD only; every other refusal names the scope to ask
for, and read-only mode still refuses an agent's invocation by any other method."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.functions.conftest import Deploy
from tests.support.app import agent_headers

ECHO = "export default async (req: Request) => Response.json({ method: req.method, body: await req.text() });"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def agent(client: TestClient, admin: dict[str, str], scopes: list[str]) -> dict[str, str]:
    return agent_headers(client, admin, scopes, "fn")


def invoke(client: TestClient, slug: str, method: str, headers: dict[str, str]) -> Any:
    body = None if method in ("GET", "HEAD") else b"ping"
    return client.request(method, f"/functions/{slug}", content=body, headers=headers)


@pytest.fixture
def echo(deploy: Deploy) -> str:
    return deploy(ECHO)


def test_functions_invoke_reaches_every_method_of_an_invocation(
    client: TestClient, admin: dict[str, str], echo: str
) -> None:
    """A read-only agent given `functions:invoke` calls a function with POST (and any method), as the
    function's own clients do; the key still reaches nothing else it did not."""
    caller = agent(client, admin, ["*:read", "functions:invoke"])
    for method in METHODS:
        answer = invoke(client, echo, method, caller)
        assert answer.status_code == 200, (method, answer.text)
        assert answer.json()["method"] == method
    assert invoke(client, echo, "POST", caller).json()["body"] == "ping"
    refused = client.post("/api/database/tables", headers=caller, json={"tableName": "t", "columns": []})
    assert refused.status_code == 403 and refused.json()["error"] == "FORBIDDEN"


def test_functions_invoke_is_not_managing_functions(
    client: TestClient, admin: dict[str, str], echo: str
) -> None:
    """Alone, `functions:invoke` calls functions (GET too) but neither reads nor changes their definitions."""
    caller = agent(client, admin, ["functions:invoke"])
    assert invoke(client, echo, "GET", caller).status_code == 200
    assert invoke(client, echo, "POST", caller).status_code == 200
    for method, path, reach in (
        ("GET", "/api/functions", "functions:read"),
        ("GET", f"/api/functions/{echo}", "functions:read"),
        ("POST", "/api/functions", "functions:write"),
        ("PUT", f"/api/functions/{echo}", "functions:write"),
    ):
        refused = client.request(method, path, headers=caller, json={"name": "x", "code": ECHO})
        assert refused.status_code == 403, (method, path, refused.text)
        body = refused.json()
        assert body["error"] == "FORBIDDEN"
        assert body["message"] == f"This agent key's scopes do not reach {reach}."
        assert body["nextActions"]
    assert client.get(f"/api/functions/{echo}", headers=admin).json()["code"] == ECHO


@pytest.mark.parametrize(
    ("scopes", "invokes"),
    [
        (["*:write"], set(METHODS)),
        (["functions:write"], set(METHODS)),
        (["*:read"], {"GET"}),
        (["functions:read"], {"GET"}),
        (["database:write"], set()),
        (["tool:invoke-function"], set()),
    ],
    ids=lambda value: ",".join(value) if isinstance(value, list) else None,
)
def test_scopes_from_before_keep_their_reach(
    client: TestClient, admin: dict[str, str], echo: str, scopes: list[str], invokes: set[str]
) -> None:
    """What each stored scope reached before `functions:invoke` existed, it reaches still: no more, no less.
    A refused invocation names `functions:invoke`, with what to do next."""
    caller = agent(client, admin, scopes)
    for method in METHODS:
        answer = invoke(client, echo, method, caller)
        if method in invokes:
            assert answer.status_code == 200, (scopes, method, answer.text)
            continue
        assert answer.status_code == 403, (scopes, method, answer.text)
        body = answer.json()
        assert body == {
            "error": "FORBIDDEN",
            "message": "This agent key's scopes do not reach functions:invoke.",
            "statusCode": 403,
            "nextActions": body["nextActions"],
        }
        assert "functions:invoke" in body["nextActions"]


@pytest.fixture
def read_only_mode(client: TestClient, admin: dict[str, str]) -> Iterator[None]:
    assert client.put("/api/agents/settings", headers=admin, json={"readOnly": True}).status_code == 200
    try:
        yield
    finally:
        client.put("/api/agents/settings", headers=admin, json={"readOnly": False})


@pytest.mark.usefixtures("read_only_mode")
def test_read_only_mode_still_refuses_an_agents_invocation_that_may_change_things(
    client: TestClient, admin: dict[str, str], echo: str
) -> None:
    """Read-only mode means no agent changes anything: a function may change what it likes, so an agent's
    invocation by a method other than GET or HEAD is refused, whatever its scopes; GET still answers."""
    caller = agent(client, admin, ["functions:invoke"])
    refused = invoke(client, echo, "POST", caller)
    assert refused.status_code == 403 and refused.json()["error"] == "AGENT_READ_ONLY"
    assert refused.json()["nextActions"]
    assert invoke(client, echo, "GET", caller).status_code == 200
    assert invoke(client, echo, "POST", admin).status_code == 200  # people are not agents
