"""API key and anon key rotation: the new key works at once, the old one until its grace period ends, and
every process (here: a second app over the same database) agrees because rotations live in the database."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.auth.conftest import auth_settings
from tests.support.app import services_of


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def file_keys(settings: Settings, client: TestClient) -> dict[str, str]:
    stored: dict[str, str] = json.loads(settings.keys_path.read_text())
    return stored


@pytest.fixture(scope="module")
def other_process(settings: Settings, client: TestClient) -> Iterator[TestClient]:
    """A second server over the same database and data dir, as a second API process would be."""
    app = create_app(settings.model_copy(update={"auth": auth_settings()}))
    with TestClient(app, raise_server_exceptions=False) as second:
        yield second


def reload_in_background(process: TestClient) -> None:
    """What a request does once the ring is older than `refresh_seconds`, waited for."""
    ring = services_of(process).core.keys.ring
    interval, ring.refresh_seconds = ring.refresh_seconds, 0

    async def trigger() -> None:
        task = ring.maybe_refresh()
        assert task is not None
        await task

    portal = process.portal
    assert portal is not None, "inside the client's `with` block"
    try:
        portal.call(trigger)
    finally:
        ring.refresh_seconds = interval


def _admin_ok(client: TestClient, key: str) -> int:
    return client.get("/api/auth/users", headers=bearer(key)).status_code


def test_rotation_needs_admin_and_valid_input(client: TestClient) -> None:
    ring = services_of(client).core.keys.ring  # the keys in force (another test may have rotated them)
    api_key, anon_key = ring.current("api_key"), ring.current("anon_key")
    assert client.post("/api/secrets/api-key/rotate").status_code == 401
    assert client.post("/api/secrets/api-key/rotate", headers=bearer(anon_key)).status_code == 401
    for body in ({"gracePeriodHours": 169}, {"gracePeriodHours": -1}, {"gracePeriodHours": "24"}, {"x": 1}):
        response = client.post("/api/secrets/api-key/rotate", json=body, headers=bearer(api_key))
        assert response.status_code == 400, body
    assert _admin_ok(client, api_key) == 200


def test_api_key_rotation_with_grace_then_revocation(
    client: TestClient, other_process: TestClient, file_keys: dict[str, str], database_url: str
) -> None:
    old = file_keys["api_key"]
    rotated = client.post("/api/secrets/api-key/rotate", json={"gracePeriodHours": 1}, headers=bearer(old))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["apiKey"]
    assert new.startswith("ik_")
    assert new != old
    assert _admin_ok(client, new) == 200
    assert _admin_ok(client, old) == 200  # still in its grace period
    reload_in_background(other_process)
    assert _admin_ok(other_process, new) == 200
    assert _admin_ok(other_process, old) == 200
    with psycopg.connect(database_url) as conn:
        stored = [r[0] for r in conn.execute("select key_ciphertext from system.project_keys").fetchall()]
        actions = [r[0] for r in conn.execute("select action from system.audit_logs").fetchall()]
    assert all(c.startswith("v1:") for c in stored)
    assert not any(new in c or old in c for c in stored)
    assert "ROTATE_API_KEY" in actions
    # A second rotation with no grace: the key rotated away is refused at once, everywhere.
    again = client.post("/api/secrets/api-key/rotate", json={"gracePeriodHours": 0}, headers=bearer(new))
    newest = again.json()["apiKey"]
    assert _admin_ok(client, new) == 401
    assert _admin_ok(client, newest) == 200
    assert _admin_ok(client, old) == 200  # the first grace period has not ended
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "update system.project_keys set expires_at = now() - interval '1 second' where not is_current"
        )
    reload_in_background(client)
    reload_in_background(other_process)
    assert _admin_ok(client, old) == 401
    assert _admin_ok(other_process, old) == 401
    assert _admin_ok(other_process, new) == 401
    assert _admin_ok(other_process, newest) == 200


def test_anon_key_rotation(client: TestClient, file_keys: dict[str, str]) -> None:
    admin = services_of(client).core.keys.ring.current("api_key")
    old = file_keys["anon_key"]
    rotated = client.post("/api/secrets/anon-key/rotate", headers=bearer(admin))
    assert rotated.status_code == 200
    assert rotated.json()["gracePeriodHours"] == 168
    new = rotated.json()["anonKey"]
    for key in (old, new):
        assert client.get("/api/auth/public-config", headers=bearer(key)).status_code == 200
        assert client.post("/api/auth/users", json={"email": "x"}, headers=bearer(key)).status_code == 400
    assert client.post("/api/auth/tokens/anon", headers=bearer(admin)).json()["accessToken"] == new
    assert (
        client.post("/api/auth/users", json={"email": "x"}, headers=bearer("anon_" + "0" * 64)).status_code
        == 401
    )
