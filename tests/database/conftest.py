"""Database admin API tests: the app over a fresh database, the caller headers they use, and names no other
test uses.

The app and its database live as long as a test module; the tables, rows and migrations a test reads it
creates itself, under a name of its own, so the tests pass in any order and on any xdist worker."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from tests.support.app import services_of

#: `new_name("books")` -> `books_3f9a0c1e`: a table, function or column name no other test uses.
NewName = Callable[[str], str]


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


@pytest.fixture
def new_name() -> NewName:
    def make(prefix: str) -> str:
        return f"{prefix}_{secrets.token_hex(4)}"

    return make


@pytest.fixture
def new_version() -> Callable[[], str]:
    """A custom migration version (digits) no other test applies; consecutive calls count up."""
    base = 10**15 + secrets.randbelow(10**15)
    counter = iter(range(10**6))
    return lambda: str(base + next(counter))
