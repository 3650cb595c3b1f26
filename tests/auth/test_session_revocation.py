"""An access token of an ended session stops working everywhere within seconds (issue 10, item 11): two
`kilnbase serve` processes of one project; the session ends through one, and the other refuses its access
token on the records API (which never asks the database about sessions) well before the token expires."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from kilnbase.identity.ended_sessions import APPLICATION_NAME
from tests.auth.conftest import PASSWORD, LiveProject, eventually, live_project, new_email, smtp_body
from tests.support.postgres import TestCluster
from tests.support.smtp_server import SmtpServer

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

#: Within this many seconds of the change, every process refuses the token (a notification takes moments).
WITHIN_SECONDS = 5.0
NOTES = "/api/database/records/notes"


@pytest.fixture(scope="module")
def project(cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveProject]:
    with live_project(cluster, tmp_path_factory.mktemp("revocation")) as live:
        for statement in (
            "create table public.notes (id serial primary key, body text)",
            "grant select on public.notes to authenticated",
            "create policy notes_for_users on public.notes for select to authenticated using (true)",
        ):
            response = httpx.post(
                f"{live.url(0)}/api/database/advance/rawsql",
                json={"query": statement},
                headers=live.admin_headers,
                timeout=30,
            )
            assert response.status_code == 200, response.text
        yield live


@pytest.fixture(scope="module")
def smtp(project: LiveProject) -> Iterator[SmtpServer]:
    server = SmtpServer(username="mailer", password="smtp-secret-password")
    server.start()
    config = smtp_body(server)
    assert httpx.put(
        f"{project.url(0)}/api/auth/smtp-config", json=config, headers=project.admin_headers
    ).is_success
    yield server
    server.stop()


def sign_up(project: LiveProject, email: str | None = None) -> Any:
    response = httpx.post(
        f"{project.url(0)}/api/auth/users?client_type=mobile",
        json={"email": email or new_email(), "password": PASSWORD},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def notes(project: LiveProject, server: int, token: str) -> int:
    """The status of a records API read with `token` on one of the processes."""
    return httpx.get(
        f"{project.url(server)}{NOTES}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).status_code


def refuses(project: LiveProject, server: int, token: str) -> Callable[[], bool]:
    return lambda: notes(project, server, token) == 401


def refused_everywhere(project: LiveProject, token: str) -> None:
    """Both processes refuse `token` within WITHIN_SECONDS (the one that ended it at once)."""
    started = time.monotonic()
    assert eventually(lambda: notes(project, 1, token) == 401, timeout=WITHIN_SECONDS), (
        "the other process still accepts the token"
    )
    assert time.monotonic() - started < WITHIN_SECONDS
    assert notes(project, 0, token) == 401


def test_signing_out_ends_the_access_token_in_every_process(project: LiveProject) -> None:
    session = sign_up(project)
    assert notes(project, 0, session["accessToken"]) == notes(project, 1, session["accessToken"]) == 200
    out = httpx.post(
        f"{project.url(0)}/api/auth/logout?client_type=mobile", json={"refreshToken": session["refreshToken"]}
    )
    assert out.status_code == 200
    assert notes(project, 0, session["accessToken"]) == 401  # the process that ended it: at once
    refused_everywhere(project, session["accessToken"])
    body = httpx.get(
        f"{project.url(1)}{NOTES}", headers={"Authorization": f"Bearer {session['accessToken']}"}
    )
    assert (body.json()["error"], body.json()["message"]) == ("AUTH_UNAUTHORIZED", "Invalid token")
    assert "signed out" in body.json()["nextActions"]


def test_signing_out_everywhere_ends_every_session_of_the_user(project: LiveProject) -> None:
    email = new_email()
    phone = sign_up(project, email)
    laptop = httpx.post(
        f"{project.url(1)}/api/auth/sessions?client_type=desktop", json={"email": email, "password": PASSWORD}
    ).json()
    other_user = sign_up(project)
    out = httpx.post(
        f"{project.url(1)}/api/auth/logout?client_type=mobile&scope=global",
        headers={"Authorization": f"Bearer {laptop['accessToken']}"},
    )
    assert out.status_code == 200
    refused_everywhere(project, phone["accessToken"])
    refused_everywhere(project, laptop["accessToken"])
    assert notes(project, 0, other_user["accessToken"]) == notes(project, 1, other_user["accessToken"]) == 200


def test_a_reused_refresh_token_ends_the_access_tokens_of_its_family(project: LiveProject) -> None:
    session = sign_up(project)
    rotate = f"{project.url(0)}/api/auth/refresh?client_type=mobile"
    rotated = httpx.post(rotate, json={"refreshToken": session["refreshToken"]}).json()
    assert notes(project, 1, rotated["accessToken"]) == 200
    reuse = httpx.post(rotate, json={"refreshToken": session["refreshToken"]})  # a stolen copy comes back
    assert reuse.status_code == 401
    refused_everywhere(project, rotated["accessToken"])


def test_a_password_reset_ends_the_access_tokens(project: LiveProject, smtp: SmtpServer) -> None:
    email = new_email()
    session = sign_up(project, email)
    url = project.url(0)
    assert httpx.post(f"{url}/api/auth/email/send-reset-password", json={"email": email}).status_code == 202
    code = smtp.last_for(email).code
    token = httpx.post(
        f"{url}/api/auth/email/exchange-reset-password-token", json={"email": email, "code": code}
    ).json()["token"]
    reset = httpx.post(
        f"{url}/api/auth/email/reset-password", json={"newPassword": "new pass 9", "otp": token}
    )
    assert reset.status_code == 200
    refused_everywhere(project, session["accessToken"])


def test_deleting_the_user_ends_their_access_tokens(project: LiveProject) -> None:
    session = sign_up(project)
    deleted = httpx.request(
        "DELETE",
        f"{project.url(0)}/api/auth/users",
        json={"userIds": [session["user"]["id"]]},
        headers=project.admin_headers,
    )
    assert deleted.json()["deletedCount"] == 1
    refused_everywhere(project, session["accessToken"])


def listeners(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "select count(*) from pg_stat_activity where application_name = %s", (APPLICATION_NAME,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_listener_that_lost_its_connection_catches_up(project: LiveProject) -> None:
    """The session ends while every listener is disconnected, so no notification reaches them: each reads
    what ended when it reconnects (a second later)."""
    session = sign_up(project)
    assert notes(project, 1, session["accessToken"]) == 200
    with psycopg.connect(project.database_url, autocommit=True) as conn:
        assert listeners(conn) == len(project.servers)
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
            (APPLICATION_NAME,),
        )
        assert eventually(lambda: listeners(conn) == 0, timeout=2)
        conn.execute(
            "update auth.sessions set revoked_at = now() where user_id = %s and revoked_at is null",
            (session["user"]["id"],),
        )
        # (Neither process ended it, and each listener reconnects after its own jittered pause: each is
        # waited for, where `refused_everywhere` expects process 0, which ended it, to refuse at once.)
        started = time.monotonic()
        token = session["accessToken"]
        for server in range(len(project.servers)):
            assert eventually(refuses(project, server, token), timeout=WITHIN_SECONDS), (
                f"process {server} still accepts the token"
            )
        assert time.monotonic() - started < WITHIN_SECONDS
        assert eventually(lambda: listeners(conn) == len(project.servers))
