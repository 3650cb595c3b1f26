"""Auth's rate limits hold across processes (issue 10, item 10): two `kilnbase serve` processes of one
project, requests alternating between them, with the counters in Postgres (the default) and in the
machine's Redis. Password sign-in is limited per client address alone (spraying many accounts) as well as
per address and account. A password-reset request answers without waiting for anything that depends on the
account."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from kilnbase.config import AuthSettings
from kilnbase.http.rate_limit import redis_prefix
from tests.auth.conftest import LiveProject, live_project, new_email, smtp_body
from tests.support.postgres import TestCluster
from tests.support.redis_server import MACHINE_REDIS_URL, machine_redis_or_skip
from tests.support.servers import free_port
from tests.support.smtp_server import SmtpServer

REDIS_URL = MACHINE_REDIS_URL
DEFAULTS = AuthSettings()

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture(scope="module", params=["postgres", "redis", "redis-unreachable"])
def backend(request: pytest.FixtureRequest) -> str:
    """Where the counters live: the project's Postgres (the default), or Redis when configured; with a
    configured Redis that cannot be reached, in Postgres again (limits are never lifted)."""
    if request.param == "redis":
        machine_redis_or_skip()
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def project(
    backend: str, cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveProject]:
    env = {"KILNBASE_RATE_LIMIT_REDIS_URL": REDIS_URL} if backend == "redis" else {}
    if backend == "redis-unreachable":
        env = {"KILNBASE_RATE_LIMIT_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with live_project(cluster, tmp_path_factory.mktemp(f"limits-{backend}"), env=env) as live:
        yield live


@pytest.fixture
def fresh(project: LiveProject, backend: str) -> LiveProject:
    """The project with its counters emptied (every test here counts from zero)."""
    with psycopg.connect(project.database_url) as conn:
        conn.execute("truncate system.rate_limits")
    if backend == "redis":
        client = machine_redis_or_skip()
        for key in client.scan_iter(match=redis_prefix(project.keys["jwt_secret"]) + "*"):
            client.delete(key)
    return project


def sign_in_answers(project: LiveProject, emails: list[str]) -> list[int]:
    """Wrong-password sign-ins, alternating between the project's processes."""
    answers = []
    for index, email in enumerate(emails):
        response = httpx.post(
            f"{project.url(index)}/api/auth/sessions", json={"email": email, "password": "wrong"}, timeout=30
        )
        answers.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["error"] == "TOO_MANY_REQUESTS"
    return answers


def test_spraying_many_accounts_from_one_address_is_limited_across_processes(fresh: LiveProject) -> None:
    answers = sign_in_answers(fresh, [new_email() for _ in range(40)])
    allowed = DEFAULTS.sign_in_ip_limit
    assert answers == [401] * allowed + [429] * (40 - allowed)


def test_guessing_one_accounts_password_is_limited_across_processes(fresh: LiveProject) -> None:
    email = new_email()
    allowed = DEFAULTS.sign_in_limit
    answers = sign_in_answers(fresh, [email] * (allowed + 2))
    assert answers == [401] * allowed + [429, 429]
    # Another account from the same address is still allowed (until the per-address limit).
    assert sign_in_answers(fresh, [new_email()]) == [401]


def test_the_counters_live_in_the_configured_store(fresh: LiveProject, backend: str) -> None:
    sign_in_answers(fresh, [new_email()])
    with psycopg.connect(fresh.database_url) as conn:
        rows = conn.execute("select key from system.rate_limits").fetchall()
    if backend == "redis":
        assert rows == []
        keys = list(machine_redis_or_skip().scan_iter(match=redis_prefix(fresh.keys["jwt_secret"]) + "*"))
        assert any(b":sign-in-ip:127.0.0.1" in key for key in keys)
    else:
        assert ("sign-in-ip:127.0.0.1",) in rows
    if backend == "redis-unreachable":
        logs = "".join(server.output() for server in fresh.servers)
        assert "rate limits: Redis unreachable (ConnectionError), counting in Postgres" in logs


@pytest.fixture
def smtp(fresh: LiveProject) -> Iterator[SmtpServer]:
    server = SmtpServer(username="mailer", password="smtp-secret-password")
    server.start()
    config = smtp_body(server)
    response = httpx.put(f"{fresh.url(0)}/api/auth/smtp-config", json=config, headers=fresh.admin_headers)
    assert response.status_code == 200, response.text
    yield server
    server.stop()


def test_a_reset_request_does_not_wait_for_work_only_a_known_address_causes(
    fresh: LiveProject, smtp: SmtpServer
) -> None:
    """While the one-time codes are locked, a reset for a known address would wait on them if it did the
    work on the request path; it answers at once, as for an unknown address, and the email follows."""
    known, unknown = new_email(), new_email()
    signed_up = httpx.post(f"{fresh.url(0)}/api/auth/users", json={"email": known, "password": "pass word 1"})
    assert signed_up.status_code == 200
    held = threading.Event()
    release = threading.Event()

    def hold_the_codes() -> None:
        with psycopg.connect(fresh.database_url) as conn, conn.transaction():
            conn.execute("lock table auth.email_otps in exclusive mode")
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_codes)
    holder.start()
    try:
        assert held.wait(10)
        answers = {
            email: httpx.post(
                f"{fresh.url(1)}/api/auth/email/send-reset-password", json={"email": email}, timeout=5
            )
            for email in (known, unknown)
        }
    finally:
        release.set()
        holder.join()
    assert answers[known].status_code == answers[unknown].status_code == 202
    assert answers[known].json() == answers[unknown].json()
    assert smtp.last_for(known).message["Subject"]
    assert smtp.mail_for(unknown, timeout=0) == []
