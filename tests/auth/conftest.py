"""Auth test fixtures: the whole app with a cheap password-hashing profile and roomy rate limits, helpers for
the admin key and sign-ups, and a project served by several real processes (`live_project`). Tests that
exercise limits build their own settings."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import AuthSettings, Settings
from tests.support.oidc_provider import OidcProvider
from tests.support.postgres import TestCluster
from tests.support.servers import ServerProcess
from tests.support.smtp_server import SmtpServer

#: The OWASP minimum argon2id profile: about 36 ms a hash instead of 145 ms.
CHEAP = {"argon2_time_cost": 2, "argon2_memory_cost_kib": 19456, "argon2_parallelism": 1}
ROOMY = {
    "email_send_limit": 1000,
    "verify_limit": 1000,
    "sign_in_limit": 1000,
    "sign_in_ip_limit": 1000,
    "sign_up_limit": 1000,
    "oauth_limit": 1000,
    "id_token_limit": 1000,
}


def auth_settings(**overrides: Any) -> AuthSettings:
    return AuthSettings(**{**CHEAP, **ROOMY, **overrides})


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"auth": auth_settings()}))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def smtp_body(server: SmtpServer, **overrides: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "host": "127.0.0.1",
        "port": server.port,
        "username": server.username,
        "password": server.password,
        "senderEmail": "noreply@kilnbase.test",
        "senderName": "Kilnbase Tests",
        "minIntervalSeconds": 0,
        **overrides,
    }


@pytest.fixture(scope="module")
def smtp(client: TestClient, admin_headers: dict[str, str]) -> Iterator[SmtpServer]:
    server = SmtpServer(username="mailer", password="smtp-secret-password")
    server.start()
    response = client.put("/api/auth/smtp-config", json=smtp_body(server), headers=admin_headers)
    assert response.status_code == 200, response.text
    yield server
    server.stop()


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    """An OpenID provider on loopback, for the modules that sign in through OAuth."""
    server = OidcProvider()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin_headers(settings: Settings, client: TestClient) -> dict[str, str]:
    keys = json.loads(settings.keys_path.read_text())
    return {"Authorization": f"Bearer {keys['api_key']}"}


T = TypeVar("T")


def eventually(probe: Callable[[], T], timeout: float = 10.0) -> T:
    """`probe()` once it is truthy (work done off the request path, a notification on its way)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


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


@dataclass
class LiveProject:
    """One project served by several `kilnbase serve` processes over one database and one data dir, as N
    stateless API processes behind a load balancer would be."""

    database_url: str
    data_dir: Path
    servers: list[ServerProcess]

    @property
    def keys(self) -> dict[str, str]:
        stored: dict[str, str] = json.loads((self.data_dir / "keys.json").read_text())
        return stored

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys['api_key']}"}

    def url(self, index: int) -> str:
        return self.servers[index % len(self.servers)].url


@contextlib.contextmanager
def live_project(
    cluster: TestCluster, root: Path, processes: int = 2, env: dict[str, str] | None = None
) -> Iterator[LiveProject]:
    database_url = cluster.create_database("live")
    environment = {
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "warning",
        **{f"KILNBASE_AUTH_{name.upper()}": str(value) for name, value in CHEAP.items()},
        **(env or {}),
    }
    project = LiveProject(database_url, root / "data", [])
    try:
        for _ in range(processes):
            server = ServerProcess(project.data_dir, env=environment)
            project.servers.append(server)
            server.start()
        yield project
    finally:
        for server in project.servers:
            if server.process is not None and server.process.poll() is None:
                server.stop()
