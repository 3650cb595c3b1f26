"""Fixtures of the key-value store's tests: the API key's headers, and a namespace of each test's own (tests
never depend on another's entries)."""

from __future__ import annotations

import secrets

import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


@pytest.fixture
def ns() -> str:
    return f"test-{secrets.token_hex(4)}"
