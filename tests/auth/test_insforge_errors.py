"""Every error `/api/auth` answers, with InsForge's code, status and message (read from its backend: the
auth routes, `AuthService`, `AuthOTPService`, the `verifyToken`/`verifyAdmin`/`verifyUser` middlewares, the
zod schemas of `@insforge/shared-schemas`), so that clients and agents matching on them work unchanged.
Kilnbase adds `nextActions` where InsForge has none; the other three fields are InsForge's to the letter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.auth.conftest import PASSWORD, new_email, sign_up
from tests.support.app import services_of
from tests.support.smtp_server import SmtpServer

NO_USER = "00000000-0000-4000-8000-000000000000"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refusal(response: Any) -> tuple[int, str, str]:
    body = response.json()
    assert body["statusCode"] == response.status_code
    return response.status_code, body["error"], body["message"]


@pytest.fixture
def config(client: TestClient, admin_headers: dict[str, str]) -> Iterator[Any]:
    def change(**fields: Any) -> None:
        assert client.put("/api/auth/config", json=fields, headers=admin_headers).status_code == 200

    yield change
    defaults = {
        "requireEmailVerification": False,
        "verifyEmailMethod": "code",
        "resetPasswordMethod": "code",
        "allowedRedirectUrls": [],
        "disableSignup": False,
        "passwordMinLength": 6,
        "requireNumber": False,
        "requireLowercase": False,
        "requireUppercase": False,
        "requireSpecialChar": False,
    }
    client.put("/api/auth/config", json=defaults, headers=admin_headers)


# --- request bodies: zod's words --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/auth/users", {}, "email: Required, password: Required"),
        ("/api/auth/users", None, "email: Required, password: Required"),
        ("/api/auth/users", {"email": "nope", "password": PASSWORD}, "email: Invalid email format"),
        # Two mailboxes to a mail header (InsForge's zod check refuses it too): never an account's address.
        ("/api/auth/users", {"email": "root,b@x.io", "password": PASSWORD}, "email: Invalid email format"),
        ("/api/auth/users", {"email": 7, "password": PASSWORD}, "email: Expected string, received number"),
        (
            "/api/auth/users",
            {"email": new_email(), "password": None},
            "password: Expected string, received null",
        ),
        (
            "/api/auth/users",
            {"email": new_email(), "password": PASSWORD, "name": ""},
            "name: Name is required",
        ),
        ("/api/auth/sessions", {}, "email: Required, password: Required"),
        (
            "/api/auth/sessions",
            {"method": "magic"},
            "method: Invalid discriminator value. Expected 'password' | 'otp'",
        ),
        (
            "/api/auth/sessions",
            {"method": "otp", "email": new_email(), "otp": "12ab"},
            "otp: OTP code must be a 6-digit numeric code",
        ),
        ("/api/auth/email/send-otp", {}, "email: Required"),
        ("/api/auth/email/send-verification", {"email": "x"}, "email: Invalid email format"),
        ("/api/auth/email/verify", {"email": new_email()}, "otp: Required"),
        (
            "/api/auth/email/exchange-reset-password-token",
            {"email": new_email(), "code": "1"},
            "code: Reset password code must be a 6-digit numeric code",
        ),
        (
            "/api/auth/email/reset-password",
            {"newPassword": PASSWORD, "otp": ""},
            "otp: OTP/token is required",
        ),
        ("/api/auth/email/reset-password", {}, "newPassword: Required, otp: Required"),
        ("/api/auth/admin/sessions", {"username": "admin"}, "password: Required"),
    ],
)
def test_bad_bodies_are_refused_in_zods_words(client: TestClient, path: str, body: Any, message: str) -> None:
    response = client.post(path, json=body) if body is not None else client.post(path)
    assert refusal(response) == (400, "INVALID_INPUT", message)


def test_admin_bodies_are_refused_in_zods_words(client: TestClient, admin_headers: dict[str, str]) -> None:
    empty = client.request("DELETE", "/api/auth/users", json={"userIds": []}, headers=admin_headers)
    assert refusal(empty) == (400, "INVALID_INPUT", "userIds: At least one user ID is required")
    bad_id = client.request(
        "DELETE", "/api/auth/users", json={"userIds": [NO_USER, "x"]}, headers=admin_headers
    )
    assert refusal(bad_id) == (400, "INVALID_INPUT", "userIds.1: Invalid user ID format")
    missing = client.request("DELETE", "/api/auth/users", json={}, headers=admin_headers)
    assert refusal(missing) == (400, "INVALID_INPUT", "userIds: Required")
    profile = client.patch(
        "/api/auth/profiles/current", json={"profile": "x"}, headers=bearer(sign_up(client)["accessToken"])
    )
    assert refusal(profile) == (400, "INVALID_INPUT", "profile: Expected object, received string")


# --- users and sessions -----------------------------------------------------------------------------------


def test_sign_up_and_sign_in_refusals(client: TestClient, config: Any, smtp: SmtpServer) -> None:
    email = new_email()
    sign_up(client, email)
    again = client.post("/api/auth/users", json={"email": email, "password": PASSWORD})
    assert refusal(again) == (409, "AUTH_EMAIL_EXISTS", "User already exists")
    wrong = client.post("/api/auth/sessions", json={"email": email, "password": "wrong password 1"})
    assert refusal(wrong) == (401, "AUTH_UNAUTHORIZED", "Invalid credentials")
    nobody = client.post("/api/auth/sessions", json={"email": new_email(), "password": PASSWORD})
    assert refusal(nobody) == (401, "AUTH_UNAUTHORIZED", "Invalid credentials")
    bad_code = client.post("/api/auth/sessions", json={"method": "otp", "email": email, "otp": "000000"})
    assert refusal(bad_code) == (400, "INVALID_INPUT", "Invalid or expired verification code")

    config(passwordMinLength=10, requireNumber=True, requireUppercase=True)
    weak = client.post("/api/auth/users", json={"email": new_email(), "password": "short"})
    expected = "Password must contain at least 10 characters long, at least one number, " + (
        "at least one uppercase letter"
    )
    assert refusal(weak) == (400, "INVALID_INPUT", expected)

    config(passwordMinLength=6, requireNumber=False, requireUppercase=False, disableSignup=True)
    blocked = client.post("/api/auth/users", json={"email": new_email(), "password": PASSWORD})
    assert refusal(blocked) == (403, "AUTH_SIGNUP_DISABLED", "User signups are disabled for this project.")

    config(disableSignup=False, requireEmailVerification=True)
    unverified = new_email()
    assert client.post("/api/auth/users", json={"email": unverified, "password": PASSWORD}).status_code == 200
    pending = client.post("/api/auth/sessions", json={"email": unverified, "password": PASSWORD})
    assert refusal(pending) == (403, "FORBIDDEN", "Email verification required")
    assert "verify your email" in pending.json()["nextActions"]


def test_link_flows_name_the_redirect_they_need(client: TestClient, config: Any) -> None:
    config(
        verifyEmailMethod="link", resetPasswordMethod="link", allowedRedirectUrls=["https://app.example.com"]
    )
    email = new_email()
    verify = client.post("/api/auth/email/send-verification", json={"email": email})
    assert refusal(verify) == (
        400,
        "INVALID_INPUT",
        "redirectTo is required when link-based email verification is enabled",
    )
    reset = client.post("/api/auth/email/send-reset-password", json={"email": email})
    assert refusal(reset) == (
        400,
        "INVALID_INPUT",
        "redirectTo is required when link-based password reset is enabled",
    )
    elsewhere = client.post(
        "/api/auth/email/send-reset-password",
        json={"email": email, "redirectTo": "https://evil.example.net/x"},
    )
    assert refusal(elsewhere) == (
        400,
        "INVALID_INPUT",
        "https://evil.example.net/x is not in the allowed redirect URLs",
    )
    assert "allowed redirect URLs" in elsewhere.json()["nextActions"]


def test_email_code_and_token_refusals(client: TestClient) -> None:
    email = new_email()
    verify = client.post("/api/auth/email/verify", json={"email": email, "otp": "123456"})
    assert refusal(verify) == (400, "INVALID_INPUT", "Invalid or expired verification code")
    exchange = client.post(
        "/api/auth/email/exchange-reset-password-token", json={"email": email, "code": "123456"}
    )
    assert refusal(exchange) == (400, "INVALID_INPUT", "Invalid or expired verification code")
    reset = client.post("/api/auth/email/reset-password", json={"newPassword": PASSWORD, "otp": "f" * 64})
    assert refusal(reset) == (400, "INVALID_INPUT", "Invalid or expired verification token")
    link = client.get("/api/auth/email/verify-link?token=xyz", follow_redirects=False)
    assert refusal(link) == (400, "INVALID_INPUT", "token: token must be a 64-character hexadecimal token")
    unknown = client.get(f"/api/auth/email/verify-link?token={'a' * 64}", follow_redirects=False)
    assert refusal(unknown) == (400, "INVALID_INPUT", "Invalid or expired verification token")


def test_refresh_refusals(client: TestClient) -> None:
    client.cookies.clear()
    web = client.post("/api/auth/refresh")
    assert refusal(web) == (401, "AUTH_UNAUTHORIZED", "No refresh token provided")
    admin = client.post("/api/auth/admin/refresh")
    assert refusal(admin) == (401, "AUTH_UNAUTHORIZED", "No admin refresh token provided")
    none = client.post("/api/auth/refresh?client_type=mobile", json={})
    assert refusal(none) == (400, "INVALID_INPUT", "refreshToken: Required")
    empty = client.post("/api/auth/refresh?client_type=mobile", json={"refreshToken": ""})
    assert refusal(empty) == (400, "INVALID_INPUT", "refreshToken: refreshToken is required")
    garbage = client.post("/api/auth/refresh?client_type=mobile", json={"refreshToken": "not-a-token"})
    assert refusal(garbage) == (401, "AUTH_UNAUTHORIZED", "Invalid or expired refresh token")
    session = client.post("/api/auth/users", json={"email": new_email(), "password": PASSWORD})
    csrf = client.post("/api/auth/refresh", headers={"X-CSRF-Token": "forged"})
    assert session.status_code == 200 and refusal(csrf) == (403, "FORBIDDEN", "Invalid CSRF token")
    client.cookies.clear()


# --- credentials: verifyToken, verifyAdmin, verifyUser ----------------------------------------------------


def test_the_current_session_needs_a_users_token(client: TestClient, admin_headers: dict[str, str]) -> None:
    anon_key = services_of(client).core.keys.anon_key
    no_token = client.get("/api/auth/sessions/current")
    assert refusal(no_token) == (401, "AUTH_INVALID_CREDENTIALS", "No token provided")
    # verifyToken refuses every bearer that is not a valid JWT as AUTH_UNAUTHORIZED, the SDK's cue to refresh.
    invalid = (401, "AUTH_UNAUTHORIZED", "Invalid token")
    assert refusal(client.get("/api/auth/sessions/current", headers=bearer("garbage"))) == invalid
    assert refusal(client.get("/api/auth/sessions/current", headers=bearer(anon_key))) == invalid
    assert refusal(client.get("/api/auth/sessions/current", headers=admin_headers)) == invalid
    admin = client.post("/api/auth/admin/sessions?client_type=mobile", json=root_admin(client))
    as_admin = client.get("/api/auth/sessions/current", headers=bearer(admin.json()["accessToken"]))
    assert refusal(as_admin) == (401, "AUTH_INVALID_CREDENTIALS", "User not authenticated")

    session = sign_up(client)
    user_id = session["user"]["id"]
    deleted = client.request("DELETE", "/api/auth/users", json={"userIds": [user_id]}, headers=admin_headers)
    assert deleted.status_code == 200
    gone = client.get("/api/auth/sessions/current", headers=bearer(session["accessToken"]))
    # Deleting a user ends their sessions, so the token itself is refused (the SDK's refresh then fails too).
    assert refusal(gone)[:2] == (401, "AUTH_UNAUTHORIZED")


def root_admin(client: TestClient) -> dict[str, str]:
    services = services_of(client)
    return {
        "username": services.core.settings.root_admin_username,
        "password": services.core.keys.root_admin_password,
    }


def test_admin_routes_refuse_in_verify_admins_words(client: TestClient) -> None:
    anon_key = services_of(client).core.keys.anon_key
    user = sign_up(client)["accessToken"]
    for method, path in [
        ("GET", "/api/auth/users"),
        ("GET", "/api/auth/config"),
        ("GET", "/api/auth/smtp-config"),
    ]:
        assert refusal(client.request(method, path)) == (
            401,
            "AUTH_INVALID_CREDENTIALS",
            "No admin token provided",
        )
        assert refusal(client.request(method, path, headers=bearer(user))) == (
            403,
            "AUTH_UNAUTHORIZED",
            "Admin access required",
        )
        assert refusal(client.request(method, path, headers=bearer(anon_key))) == (
            401,
            "AUTH_UNAUTHORIZED",
            "Invalid token",
        )
        assert refusal(client.request(method, path, headers=bearer("ik_" + "0" * 64))) == (
            401,
            "AUTH_INVALID_API_KEY",
            "Invalid API key",
        )
        assert (
            refusal(client.request(method, path, headers={"x-api-key": "ik_wrong"}))[1]
            == "AUTH_INVALID_API_KEY"
        )
    signed_in_admin = client.get("/api/auth/admin/sessions/current", headers=bearer(user))
    assert refusal(signed_in_admin) == (403, "AUTH_UNAUTHORIZED", "Admin access required")
    assert refusal(client.get("/api/auth/admin/sessions/current")) == (
        401,
        "AUTH_INVALID_CREDENTIALS",
        "No token provided",
    )


def test_sign_up_refuses_an_invalid_credential_by_its_kind(client: TestClient) -> None:
    body = {"email": new_email(), "password": PASSWORD}
    assert refusal(client.post("/api/auth/users", json=body, headers=bearer("anon_nope"))) == (
        401,
        "AUTH_INVALID_CREDENTIALS",
        "Invalid anon key",
    )
    assert refusal(client.post("/api/auth/users", json=body, headers=bearer("ik_nope")))[1:] == (
        "AUTH_INVALID_API_KEY",
        "Invalid API key",
    )
    assert refusal(client.post("/api/auth/users", json=body, headers=bearer("a.b.c"))) == (
        401,
        "AUTH_UNAUTHORIZED",
        "Invalid token",
    )


def test_admin_sign_in_and_user_lookups(client: TestClient, admin_headers: dict[str, str]) -> None:
    wrong = client.post("/api/auth/admin/sessions", json={"username": "admin", "password": "nope"})
    assert refusal(wrong) == (401, "AUTH_UNAUTHORIZED", "Invalid admin credentials")
    assert refusal(client.get("/api/auth/users/nope", headers=admin_headers)) == (
        400,
        "INVALID_INPUT",
        "Invalid user ID format",
    )
    assert refusal(client.get(f"/api/auth/users/{NO_USER}", headers=admin_headers)) == (
        404,
        "AUTH_USER_NOT_FOUND",
        "User does not exist",
    )
    assert refusal(client.get("/api/auth/profiles/nope")) == (400, "INVALID_INPUT", "Invalid user ID format")
    assert refusal(client.get(f"/api/auth/profiles/{NO_USER}")) == (
        404,
        "AUTH_USER_NOT_FOUND",
        "User not found",
    )
    no_token = client.patch("/api/auth/profiles/current", json={"profile": {}})
    assert refusal(no_token) == (401, "AUTH_INVALID_CREDENTIALS", "No token provided")


def test_oauth_and_template_refusals(client: TestClient, admin_headers: dict[str, str]) -> None:
    missing = client.get("/api/auth/oauth/github/config", headers=admin_headers)
    assert refusal(missing) == (
        404,
        "AUTH_OAUTH_CONFIG_NOT_FOUND",
        "OAuth configuration for github not found",
    )
    custom = client.get("/api/auth/oauth/custom/acme/config", headers=admin_headers)
    assert refusal(custom) == (
        404,
        "AUTH_OAUTH_CONFIG_NOT_FOUND",
        "Custom OAuth configuration for acme not found",
    )
    bad = client.delete("/api/auth/oauth/myspace/config", headers=admin_headers)
    assert refusal(bad) == (400, "INVALID_INPUT", "Invalid provider name")
    config = {"provider": "discord", "clientId": "id", "clientSecret": "secret"}
    assert client.post("/api/auth/oauth/configs", json=config, headers=admin_headers).status_code == 200
    twice = client.post("/api/auth/oauth/configs", json=config, headers=admin_headers)
    assert refusal(twice) == (
        409,
        "AUTH_OAUTH_CONFIG_ALREADY_EXISTS",
        "OAuth configuration for discord already exists",
    )
    unsupported = client.get(
        "/api/auth/oauth/myspace?redirect_uri=https://a.example&code_challenge=" + "a" * 43
    )
    assert refusal(unsupported)[:2] == (400, "INVALID_INPUT")
    assert refusal(unsupported)[2].startswith(
        "Unsupported OAuth provider: myspace. Supported providers: google"
    )
    empty = client.put(
        "/api/auth/email-templates/request-otp", json={"subject": "", "bodyHtml": ""}, headers=admin_headers
    )
    assert refusal(empty) == (
        400,
        "INVALID_INPUT",
        "subject: Subject is required, bodyHtml: Template body is required",
    )
    template = client.put(
        "/api/auth/email-templates/nope", json={"subject": "s", "bodyHtml": "b"}, headers=admin_headers
    )
    assert refusal(template) == (
        400,
        "INVALID_INPUT",
        "Invalid template type. Must be one of: email-verification-code, email-verification-link, "
        "request-otp, reset-password-code, reset-password-link",
    )


def test_oauth_start_and_exchange_refusals(client: TestClient) -> None:
    start = "/api/auth/oauth/google"
    nothing = client.get(start)
    assert refusal(nothing) == (
        400,
        "INVALID_INPUT",
        "redirect_uri: Redirect URI is required, code_challenge: Required",
    )
    short = client.get(f"{start}?redirect_uri=https://app.example.com/cb&code_challenge=abc!")
    assert refusal(short) == (
        400,
        "INVALID_INPUT",
        "code_challenge: Code challenge must be at least 43 characters, "
        "code_challenge: Code challenge must be base64url encoded",
    )
    not_a_url = client.get(f"{start}?redirect_uri=nope&code_challenge={'a' * 43}")
    assert refusal(not_a_url) == (400, "INVALID_INPUT", "redirect_uri: Invalid url")
    exchange = "/api/auth/oauth/exchange"
    empty = client.post(exchange, json={"code": "", "code_verifier": "a" * 129})
    assert refusal(empty) == (
        400,
        "INVALID_INPUT",
        "code: Exchange code is required, code_verifier: Code verifier must be at most 128 characters",
    )
    unknown = client.post(exchange, json={"code": "nope", "code_verifier": "a" * 43})
    assert refusal(unknown) == (400, "INVALID_INPUT", "Invalid or expired code")
