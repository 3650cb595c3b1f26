"""Metadata tests: the app over a fresh database per module, the admin's headers, and names no other test
uses (tables a test reads it creates itself)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, anon_headers

NewName = Callable[[str], str]


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


@pytest.fixture(scope="module")
def anon(client: TestClient) -> dict[str, str]:
    return anon_headers(client)


@pytest.fixture
def new_name() -> NewName:
    return lambda prefix: f"{prefix}_{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def sql(client: TestClient, admin: dict[str, str]) -> Callable[[str], Any]:
    """Run raw SQL through the API (as project_admin), asserting it worked."""

    def run(query: str) -> Any:
        response = client.post("/api/database/advance/rawsql", json={"query": query}, headers=admin)
        assert response.status_code == 200, response.text
        return response.json()

    return run
