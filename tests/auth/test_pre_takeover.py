"""Account pre-takeover (issue 10, item 9). With verification off (the default), someone registers the
victim's address first, by password or through a provider that did not verify it. When the victim proves
the address (an emailed sign-in code, a verification code or link, a password reset), whatever the squatter
set up ends: the password, the linked identity, and every session, access tokens included."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.auth.conftest import PASSWORD, auth_settings, new_email, sign_up, smtp_body
from tests.auth.test_oauth import begin, come_back, sign_in
from tests.support.oidc_provider import OidcProvider, ProviderUser
from tests.support.smtp_server import SmtpServer

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

SQUATTERS_PASSWORD = "squatter password 1"
APP = "http://localhost:3000"


@pytest.fixture(scope="module")
def client(settings: Settings, provider: OidcProvider) -> Iterator[TestClient]:
    endpoints = {"google": provider.endpoints_for("google")}
    app = create_app(settings.model_copy(update={"auth": auth_settings(oauth_endpoints=endpoints)}))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def smtp(client: TestClient, admin_headers: dict[str, str], provider: OidcProvider) -> Iterator[SmtpServer]:
    server = SmtpServer(username="mailer", password="smtp-secret-password")
    server.start()
    assert (
        client.put("/api/auth/smtp-config", json=smtp_body(server), headers=admin_headers).status_code == 200
    )
    google = {"provider": "google", "clientId": provider.client_id, "clientSecret": provider.client_secret}
    assert client.post("/api/auth/oauth/configs", json=google, headers=admin_headers).status_code == 200
    config = {"allowedRedirectUrls": [APP], "verifyEmailMethod": "code"}
    assert client.put("/api/auth/config", json=config, headers=admin_headers).status_code == 200
    yield server
    server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def squat(client: TestClient, email: str) -> Any:
    """The squatter signs up the victim's address with their own password (no verification needed)."""
    squatter = sign_up(client, email, SQUATTERS_PASSWORD)
    assert squatter["user"]["emailVerified"] is False
    return squatter


def assert_squatter_is_out(client: TestClient, email: str, squatter: dict[str, Any]) -> None:
    password = client.post(
        "/api/auth/sessions?client_type=mobile", json={"email": email, "password": SQUATTERS_PASSWORD}
    )
    assert password.status_code == 401, "the squatter's password still works"
    refresh = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": squatter["refreshToken"]}
    )
    assert refresh.status_code == 401, "the squatter's session can still be refreshed"
    current = client.get("/api/auth/sessions/current", headers=bearer(squatter["accessToken"]))
    assert current.status_code == 401, "the squatter's access token still works"


def test_signing_in_with_an_emailed_code_ends_the_squatters_password_and_sessions(
    client: TestClient, smtp: SmtpServer
) -> None:
    email = new_email()
    squatter = squat(client, email)
    assert client.post("/api/auth/email/send-otp", json={"email": email}).status_code == 202
    code = smtp.last_for(email).code
    victim = client.post(
        "/api/auth/sessions?client_type=mobile", json={"method": "otp", "email": email, "otp": code}
    )
    assert victim.status_code == 200, victim.text
    assert victim.json()["user"]["emailVerified"] is True
    assert victim.json()["user"]["providers"] == []
    assert_squatter_is_out(client, email, squatter)
    assert (
        client.get("/api/auth/sessions/current", headers=bearer(victim.json()["accessToken"])).status_code
        == 200
    )


def test_verifying_the_address_by_code_ends_them_too(client: TestClient, smtp: SmtpServer) -> None:
    email = new_email()
    squatter = squat(client, email)
    assert client.post("/api/auth/email/send-verification", json={"email": email}).status_code == 202
    code = smtp.last_for(email).code
    verified = client.post("/api/auth/email/verify?client_type=mobile", json={"email": email, "otp": code})
    assert verified.status_code == 200, verified.text
    assert_squatter_is_out(client, email, squatter)


def test_verifying_the_address_by_link_ends_them_too(
    client: TestClient, smtp: SmtpServer, admin_headers: dict[str, str]
) -> None:
    email = new_email()
    squatter = squat(client, email)
    client.put("/api/auth/config", json={"verifyEmailMethod": "link"}, headers=admin_headers)
    try:
        sent = client.post(
            "/api/auth/email/send-verification", json={"email": email, "redirectTo": f"{APP}/verified"}
        )
        assert sent.status_code == 202
        link = urlsplit(smtp.last_for(email).link)
        assert client.get(f"{link.path}?{link.query}", follow_redirects=False).status_code == 302
    finally:
        client.put("/api/auth/config", json={"verifyEmailMethod": "code"}, headers=admin_headers)
    assert_squatter_is_out(client, email, squatter)


def test_a_password_reset_ends_a_squatters_provider_identity(
    client: TestClient, smtp: SmtpServer, provider: OidcProvider
) -> None:
    """The squatter came in through a provider that did not verify the address: the reset removes that
    identity (and its sessions), so the provider no longer signs the squatter in."""
    email = new_email()
    squatters_identity = ProviderUser(secrets.token_hex(4), email, email_verified=False)
    provider.next_user = squatters_identity
    squatter = sign_in(client, "/api/auth/oauth/google")
    assert squatter["user"]["providers"] == ["google"] and squatter["user"]["emailVerified"] is False
    assert client.post("/api/auth/email/send-reset-password", json={"email": email}).status_code == 202
    code = smtp.last_for(email).code
    exchanged = client.post(
        "/api/auth/email/exchange-reset-password-token", json={"email": email, "code": code}
    )
    reset = client.post(
        "/api/auth/email/reset-password",
        json={"newPassword": "victims password 2", "otp": exchanged.json()["token"]},
    )
    assert reset.status_code == 200, reset.text
    victim = client.post(
        "/api/auth/sessions?client_type=mobile", json={"email": email, "password": "victims password 2"}
    ).json()
    assert victim["user"]["providers"] == ["email"] and victim["user"]["emailVerified"] is True
    assert (
        client.get("/api/auth/sessions/current", headers=bearer(squatter["accessToken"])).status_code == 401
    )
    provider.next_user = squatters_identity
    _verifier, callback = begin(client, "/api/auth/oauth/google")
    assert come_back(client, callback) == {"error": ["email_exists"]}


def test_when_verification_is_required_verifying_keeps_the_sign_up_password(
    client: TestClient, smtp: SmtpServer, admin_headers: dict[str, str]
) -> None:
    """The proof completes the sign-up that set the password (which could not be used before): it stays."""
    client.put("/api/auth/config", json={"requireEmailVerification": True}, headers=admin_headers)
    try:
        email = new_email()
        created = client.post("/api/auth/users", json={"email": email, "password": PASSWORD})
        assert created.json()["requireEmailVerification"] is True
        code = smtp.last_for(email).code
        assert client.post("/api/auth/email/verify", json={"email": email, "otp": code}).status_code == 200
        signed_in = client.post("/api/auth/sessions", json={"email": email, "password": PASSWORD})
        assert signed_in.status_code == 200
    finally:
        client.put("/api/auth/config", json={"requireEmailVerification": False}, headers=admin_headers)
        client.cookies.clear()


def test_an_account_that_proved_its_address_keeps_its_sessions(client: TestClient, smtp: SmtpServer) -> None:
    email = new_email()
    for count in (1, 2):
        assert client.post("/api/auth/email/send-otp", json={"email": email}).status_code == 202
        body = {"method": "otp", "email": email, "otp": smtp.last_for(email, count=count).code}
        signed_in = client.post("/api/auth/sessions?client_type=mobile", json=body)
        assert signed_in.status_code == 200
        if count == 1:
            first = signed_in.json()
    # The second proof found the address proven already: the first session lives on.
    assert client.get("/api/auth/sessions/current", headers=bearer(first["accessToken"])).status_code == 200
    rotated = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": first["refreshToken"]}
    )
    assert rotated.status_code == 200
