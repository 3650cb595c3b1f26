"""Fixtures of the project config's tests: the API key's headers, bucket names no other test uses, and the
live config as `GET /api/config` answers it (each test reads what it changes, so the tests hold in any
order over the module's one database)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers

BUCKETS = "/api/storage/buckets"


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


@pytest.fixture
def name() -> Callable[[str], str]:
    """A bucket name of this test's own."""
    return lambda stem: f"{stem}-{secrets.token_hex(4)}"


def live(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.get("/api/config", headers=headers)
    assert response.status_code == 200, response.text
    config: dict[str, Any] = response.json()["config"]
    return config


def apply(client: TestClient, headers: dict[str, str], config: Any, **flags: bool) -> Any:
    return client.post("/api/config/apply", headers=headers, json={"config": config, **flags})


def new_bucket(client: TestClient, admin: dict[str, str], bucket: str, *, public: bool = False) -> None:
    created = client.post(BUCKETS, headers=admin, json={"bucketName": bucket, "isPublic": public})
    assert created.status_code == 201, created.text


def put_object(client: TestClient, admin: dict[str, str], bucket: str, key: str) -> None:
    stored = client.put(
        f"{BUCKETS}/{bucket}/objects/{key}", headers=admin, files={"file": ("a.txt", b"hello", "text/plain")}
    )
    assert stored.status_code == 200, stored.text


def bucket_names(client: TestClient, admin: dict[str, str]) -> set[str]:
    return set(live(client, admin)["storage"]["buckets"])
