"""Writing a function's code is reading the secrets it sees: a function sees its secrets' values (every
active secret when it names none), so its code can answer them to its caller. An agent key whose scopes do
not reach `secrets:read` may deploy or change code only for a function that sees no secret (`secrets: []`),
and may not give a function secrets; people, and agents that may read secrets, deploy as before."""

from __future__ import annotations

import secrets as random
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.functions.conftest import Deploy, new_slug
from tests.support.app import agent_headers, mcp_call

LEAK = "export default () => Response.json({ value: Deno.env.get('LEAK_ME') ?? null });"
PLAIN = "export default () => new Response('plain');"


@pytest.fixture(scope="module")
def builder(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    """An agent key that manages functions, and may not read secrets."""
    return agent_headers(client, admin, ["functions:write"], "builder")


@pytest.fixture(scope="module")
def trusted(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    return agent_headers(client, admin, ["functions:write", "secrets:read"], "trusted")


@pytest.fixture
def secret(client: TestClient, admin: dict[str, str]) -> str:
    value = random.token_hex(8)
    created = client.post("/api/secrets", headers=admin, json={"key": "LEAK_ME", "value": value})
    if created.status_code == 409:  # (another test of this module made it: give it this test's value)
        created = client.put("/api/secrets/LEAK_ME", headers=admin, json={"value": value})
    assert created.status_code in (200, 201), created.text
    return value


def create(
    client: TestClient, headers: dict[str, str], code: str, slug: str | None = None, **fields: Any
) -> Any:
    slug = slug or new_slug()
    return client.post(
        "/api/functions", headers=headers, json={"name": slug, "slug": slug, "code": code, **fields}
    )


def assert_refused(response: Any, sees: str) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "FORBIDDEN" and f"that sees {sees}" in body["message"], body
    assert '"secrets": []' in body["nextActions"] and "secrets:read" in body["nextActions"], body


@pytest.mark.parametrize(
    ("fields", "sees"),
    [
        ({}, "every secret"),
        ({"secrets": None}, "every secret"),
        ({"secrets": ["LEAK_ME"]}, "the secrets LEAK_ME"),
    ],
)
def test_an_agent_that_may_not_read_secrets_may_not_deploy_code_that_sees_them(
    client: TestClient, admin: dict[str, str], builder: dict[str, str], fields: dict[str, Any], sees: str
) -> None:
    slug = new_slug()
    assert_refused(create(client, builder, LEAK, slug, **fields), sees)
    assert client.get(f"/api/functions/{slug}", headers=admin).status_code == 404  # nothing was made
    assert client.get(f"/functions/{slug}").status_code == 404


def test_an_agent_deploys_a_function_that_sees_no_secret(
    client: TestClient, builder: dict[str, str], secret: str
) -> None:
    response = create(client, builder, LEAK, secrets=[])
    assert response.status_code == 201, response.text
    called = client.get(f"/functions/{response.json()['function']['slug']}")
    assert called.status_code == 200 and called.json() == {"value": None}  # it sees none


def test_an_agent_may_not_change_the_code_or_secrets_of_a_function_that_sees_them(
    client: TestClient, deploy: Deploy, builder: dict[str, str], secret: str
) -> None:
    slug = deploy(PLAIN)  # a person's function, seeing every secret
    assert_refused(client.put(f"/api/functions/{slug}", headers=builder, json={"code": LEAK}), "every secret")
    assert client.get(f"/functions/{slug}").text == "plain"
    mine = create(client, builder, PLAIN, secrets=[]).json()["function"]["slug"]
    given = client.put(f"/api/functions/{mine}", headers=builder, json={"secrets": ["LEAK_ME"]})
    assert_refused(given, "the secrets LEAK_ME")
    # What does not touch code or secrets stays open: a description, the status.
    described = client.put(f"/api/functions/{slug}", headers=builder, json={"description": "kept"})
    assert described.status_code == 200, described.text
    # And code for a function that sees nothing.
    assert client.put(f"/api/functions/{mine}", headers=builder, json={"code": LEAK}).status_code == 200


def test_the_mcp_tools_refuse_the_same(client: TestClient, builder: dict[str, str], secret: str) -> None:
    slug = new_slug()
    text = mcp_call(client, builder, "create-function", {"name": slug, "slug": slug, "code": LEAK})
    assert "may not deploy code" in text and "secrets:read" in text, text
    assert client.get(f"/functions/{slug}").status_code == 404


def test_people_and_agents_that_may_read_secrets_deploy_as_before(
    client: TestClient, admin: dict[str, str], trusted: dict[str, str], secret: str
) -> None:
    for headers in (admin, trusted):
        response = create(client, headers, LEAK)
        assert response.status_code == 201, response.text
        called = client.get(f"/functions/{response.json()['function']['slug']}")
        assert called.status_code == 200 and called.json() == {"value": secret}
