"""Database admin API tests: the app over a fresh database, and the caller headers they use."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from tests.support.app import services_of


def _keys(client: TestClient) -> dict[str, str]:
    settings = services_of(client).core.settings
    stored: dict[str, str] = json.loads((settings.data_dir / "keys.json").read_text())
    return stored


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {_keys(client)['api_key']}"}


@pytest.fixture(scope="module")
def anon(client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {_keys(client)['anon_key']}"}


@pytest.fixture(scope="module")
def user(client: TestClient) -> dict[str, str]:
    tokens = services_of(client).core.tokens
    token = tokens.sign(
        {"sub": "6a0c8f3e-1a4b-4a7e-9f51-2f7d9c1b2a3c", "role": "authenticated", "email": "u@x.io"}
    )
    return {"Authorization": f"Bearer {token}"}
