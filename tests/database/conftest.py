"""Database admin API tests: the app over a fresh database, the caller headers they use, and names no other
test uses.

The app and its database live as long as a test module; the tables, rows and migrations a test reads it
creates itself, under a name of its own, so the tests pass in any order and on any xdist worker."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, anon_headers, user_headers

#: `new_name("books")` -> `books_3f9a0c1e`: a table, function or column name no other test uses.
NewName = Callable[[str], str]


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


@pytest.fixture(scope="module")
def anon(client: TestClient) -> dict[str, str]:
    return anon_headers(client)


@pytest.fixture(scope="module")
def user(client: TestClient) -> dict[str, str]:
    return user_headers(client, "6a0c8f3e-1a4b-4a7e-9f51-2f7d9c1b2a3c", "u@x.io")


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
