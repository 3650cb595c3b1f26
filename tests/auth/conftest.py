"""Auth test fixtures: the whole app with a cheap password-hashing profile and roomy rate limits, and helpers
for the admin key and sign-ups. Tests that exercise limits build their own settings."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import AuthSettings, Settings

#: The OWASP minimum argon2id profile: about 36 ms a hash instead of 145 ms.
CHEAP = {"argon2_time_cost": 2, "argon2_memory_cost_kib": 19456, "argon2_parallelism": 1}
ROOMY = {"email_send_limit": 1000, "verify_limit": 1000, "sign_in_limit": 1000}


def auth_settings(**overrides: Any) -> AuthSettings:
    return AuthSettings(**{**CHEAP, **ROOMY, **overrides})


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"auth": auth_settings()}))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def admin_headers(settings: Settings, client: TestClient) -> dict[str, str]:
    keys = json.loads(settings.keys_path.read_text())
    return {"Authorization": f"Bearer {keys['api_key']}"}


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


PASSWORD = "correct horse 1"


def sign_up(client: TestClient, email: str | None = None, password: str = PASSWORD, **extra: Any) -> Any:
    response = client.post(
        "/api/auth/users?client_type=mobile",
        json={"email": email or new_email(), "password": password, **extra},
    )
    assert response.status_code == 200, response.text
    return response.json()
